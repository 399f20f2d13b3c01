//! Positions in text as people see them.
//!
//! Parsers say where an error is as a byte offset; people and their editors count lines
//! and characters. [`line_col`] turns one into the other for every error message that
//! names a position: in the proxy's settings file and in the DC/OS CLI's `dcos.toml`.

/// 1-based line and column of byte `offset` in `text`, the column counted in characters
/// (Unicode scalar values), as an editor shows it, not in bytes. An offset inside a
/// character counts as that character's start; an offset past the end as the end.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::dcos::config::{ConfigError, parse_file};
    use crate::settings::{FileSettings, SettingsError};

    #[test]
    fn line_col_counts_from_one_in_characters() {
        let text = "a = 1\nbé = \"x\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        // 'é' is two bytes but one column.
        assert_eq!(line_col(text, 9), (2, 3));
        // Offsets inside a character or past the end are clamped.
        assert_eq!(line_col(text, 8), (2, 2));
        assert_eq!(line_col(text, 999), (3, 1));
    }

    /// The same mistake after the same non-ASCII text: both files name the column an
    /// editor shows, 10 (a byte count would say 12: "é" and "ü" are two bytes each).
    #[test]
    fn both_config_files_name_character_columns() {
        let text = "# é\nk = \"éü\" x";
        let want = (2, 10);
        let err = FileSettings::parse(Path::new("/s.toml"), text).unwrap_err();
        let SettingsError::Parse { line, column, .. } = err else {
            panic!("{err:?}");
        };
        assert_eq!((line, column), want, "settings file");

        let err = parse_file(Path::new("/x/dcos.toml"), text).unwrap_err();
        let ConfigError::Syntax { position, .. } = err else {
            panic!("{err:?}");
        };
        assert_eq!(position, Some(want), "dcos.toml");
    }
}
