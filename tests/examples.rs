//! The deployment examples in `config/` and the `Dockerfile` are parsed and checked here,
//! so they cannot rot: the proxy's arguments and `DCOS_TOKEN_PROXY_*` variables must be
//! accepted by the real flag parser and settings, the probes must point at the admin
//! listener's `/healthz` and `/readyz`, the credential must come from
//! `DCOS_SERVICE_ACCOUNT_CREDENTIAL`, and the batch Job must call `/quitquitquit`.

use std::path::Path;

use clap::{CommandFactory, Parser};
use dcos_token_proxy::cli::{Cli, Command};
use dcos_token_proxy::env::Env;
use dcos_token_proxy::settings::{FileSettings, Settings};
use dcos_token_proxy::source::credential::ENV_SERVICE_ACCOUNT_CREDENTIAL;
use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn yaml(name: &str) -> Value {
    let text = std::fs::read_to_string(root().join("config").join(name)).unwrap();
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("config/{name}: {e}"))
}

/// The settings the proxy would run with, given its `args` and environment `env`. The
/// `DCOS_TOKEN_PROXY_*` variables are turned into the flags clap binds them to (the
/// process environment is never touched); an unknown one fails the test.
fn settings(args: &[String], env: &[(String, String)]) -> Settings {
    let command = Cli::command();
    let mut argv = vec!["dcos-token-proxy".to_owned()];
    argv.extend(args.iter().cloned());
    for (k, v) in env {
        if !k.starts_with("DCOS_TOKEN_PROXY_") {
            continue;
        }
        let arg = command
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == k.as_str()))
            .unwrap_or_else(|| panic!("{k} is not a variable the proxy reads"));
        argv.push(format!("--{}={v}", arg.get_long().unwrap()));
    }
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert!(cli.command.is_none(), "the proxy itself runs");
    let env = Env::from_pairs(env.iter().cloned());
    Settings::resolve(&cli, &FileSettings::default(), &env)
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// A Kubernetes container's `env` as pairs; a `valueFrom` counts as set (to "x").
fn k8s_env(container: &Value) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| {
                    let value = e["value"].as_str().unwrap_or("x").to_owned();
                    (e["name"].as_str().unwrap().to_owned(), value)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn container<'a>(containers: &'a Value, name: &str) -> &'a Value {
    containers
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn has(env: &[(String, String)], key: &str) -> bool {
    env.iter().any(|(k, _)| k == key)
}

#[test]
fn kubernetes_pod_probes_the_admin_listener_and_takes_the_credential_from_a_secret() {
    let pod = yaml("k8s-sidecar-pod.yaml");
    assert_eq!(pod["kind"], "Pod");
    let proxy = container(&pod["spec"]["containers"], "dcos-token-proxy");
    let env = k8s_env(proxy);
    assert!(has(&env, ENV_SERVICE_ACCOUNT_CREDENTIAL));
    assert!(proxy["env"].as_array().unwrap().iter().any(|e| {
        e["name"] == ENV_SERVICE_ACCOUNT_CREDENTIAL && e["valueFrom"]["secretKeyRef"].is_object()
    }));
    let s = settings(&strings(&proxy["args"]), &env);
    let admin = s.admin_listen.expect("the admin listener is on");
    let admin_port = proxy["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "admin")
        .unwrap();
    assert_eq!(admin_port["containerPort"], admin.port());
    assert_eq!(proxy["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(proxy["readinessProbe"]["httpGet"]["path"], "/readyz");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(proxy[probe]["httpGet"]["port"], "admin");
    }
    assert_eq!(s.log_format, dcos_token_proxy::types::LogFormat::Json);
}

#[test]
fn kubernetes_job_waits_for_the_proxy_then_calls_quitquitquit() {
    let job = yaml("k8s-job.yaml");
    assert_eq!(job["kind"], "Job");
    let containers = &job["spec"]["template"]["spec"]["containers"];
    let proxy = container(containers, "dcos-token-proxy");
    let s = settings(&strings(&proxy["args"]), &k8s_env(proxy));
    let admin = s.admin_listen.expect("the admin listener is on");
    let main = container(containers, "report");
    let script = strings(&main["command"]).join(" ");
    let base = format!("http://127.0.0.1:{}", admin.port());
    let ready = script
        .find(&format!("{base}/readyz"))
        .expect("waits for /readyz");
    let quit = script
        .find(&format!("-X POST {base}/quitquitquit"))
        .expect("calls /quitquitquit");
    assert!(ready < quit);
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
}

#[test]
fn marathon_pod_injects_the_credential_as_a_dcos_secret() {
    let text = std::fs::read_to_string(root().join("config/marathon-pod.json")).unwrap();
    let pod: Value = serde_json::from_str(&text).unwrap();
    let proxy = container(&pod["containers"], "dcos-token-proxy");
    let cred = &proxy["environment"][ENV_SERVICE_ACCOUNT_CREDENTIAL]["secret"];
    let secret = cred.as_str().expect("the credential is a secret reference");
    assert!(pod["secrets"][secret]["source"].is_string());
    let argv = strings(&proxy["exec"]["command"]["argv"]);
    assert!(argv[0].ends_with("/dcos-token-proxy"));
    let env: Vec<(String, String)> = proxy["environment"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("x").to_owned()))
        .collect();
    let s = settings(&argv[1..], &env);
    let admin = s.admin_listen.expect("the admin listener is on");
    let endpoint = &proxy["endpoints"][0];
    assert_eq!(endpoint["containerPort"], admin.port());
    let check = &proxy["healthCheck"]["http"];
    assert_eq!(check["endpoint"], endpoint["name"]);
    assert_eq!(check["path"], "/readyz");
    let app = container(&pod["containers"], "app");
    assert_eq!(
        app["environment"]["DCOS_URL"],
        format!("http://{}", s.listen)
    );
}

#[test]
fn docker_compose_runs_the_image_with_a_credential_file() {
    let compose = yaml("docker-compose.yml");
    let proxy = &compose["services"]["dcos-proxy"];
    let env: Vec<(String, String)> = proxy["environment"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    let cred = &proxy["environment"][ENV_SERVICE_ACCOUNT_CREDENTIAL];
    let secret = strings(&proxy["secrets"])[0].clone();
    assert_eq!(cred.as_str().unwrap(), format!("/run/secrets/{secret}"));
    assert!(compose["secrets"][&secret]["file"].is_string());
    let s = settings(&strings(&proxy["command"]), &env);
    assert!(s.admin_listen.is_some());
    // The app reaches the proxy by its service name, which must be an allowed host.
    let app_url = compose["services"]["app"]["environment"]["DCOS_URL"]
        .as_str()
        .unwrap();
    let authority: http::uri::Authority = app_url
        .parse::<http::Uri>()
        .unwrap()
        .authority()
        .unwrap()
        .clone();
    let hosts: Vec<String> = s
        .policy
        .allowed_hosts
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(hosts.iter().any(|h| h == authority.host()), "{hosts:?}");
    assert_eq!(
        compose["services"]["app"]["depends_on"]["dcos-proxy"]["condition"],
        "service_healthy"
    );
}

/// The Dockerfile's lines that `.ci/run` reads, as it reads them.
struct Dockerfile {
    build: String,
    env: Vec<(String, String)>,
    cmd: Vec<String>,
    healthcheck: Vec<String>,
}

fn json_array(line: &str) -> Vec<String> {
    let start = line.find('[').unwrap();
    serde_json::from_str::<Vec<String>>(&line[start..]).unwrap()
}

fn dockerfile() -> Dockerfile {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let mut d = Dockerfile {
        build: String::new(),
        env: Vec::new(),
        cmd: Vec::new(),
        healthcheck: Vec::new(),
    };
    for line in text.lines() {
        if let Some(cmd) = line.strip_prefix("RUN cargo build") {
            d.build = format!("cargo build{cmd}");
        } else if let Some(kv) = line.strip_prefix("ENV ") {
            let (k, v) = kv.split_once('=').unwrap();
            d.env.push((k.to_owned(), v.to_owned()));
        } else if line.starts_with("CMD ") {
            d.cmd = json_array(line);
        } else if line.starts_with("HEALTHCHECK ") {
            d.healthcheck = json_array(line);
        }
    }
    d
}

#[test]
fn the_dockerfile_builds_locked_release_and_runs_in_sidecar_mode() {
    let d = dockerfile();
    assert!(
        d.build.starts_with("cargo build --locked --release"),
        "{}",
        d.build
    );
    let s = settings(&d.cmd, &d.env);
    assert_eq!(s.listen.to_string(), "0.0.0.0:8079");
    assert!(s.allow_remote);
    assert_eq!(s.admin_listen.unwrap().to_string(), "0.0.0.0:9079");
    assert_eq!(s.log_format, dcos_token_proxy::types::LogFormat::Json);
    // The HEALTHCHECK is the binary's own `health` command against the admin port.
    assert!(d.healthcheck[0].ends_with("/dcos-token-proxy"));
    let cli = Cli::try_parse_from(&d.healthcheck).unwrap();
    let Some(Command::Health { url, .. }) = cli.command else {
        panic!("HEALTHCHECK runs `health`")
    };
    assert_eq!(
        url,
        format!("http://127.0.0.1:{}", s.admin_listen.unwrap().port())
    );
    // `.ci/run` builds, starts and probes the binary from these same lines.
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    assert!(
        ci.contains(r"sed -n 's/^RUN \(cargo build"),
        ".ci/run reads the build line"
    );
    assert!(ci.contains("json_args CMD") && ci.contains("json_args HEALTHCHECK"));
}

/// Every file the release build reads from outside `src/` (an `include_str!` or
/// `include_bytes!` in non-test code) is under a directory the Dockerfile's build stage
/// copies in, or `docker build` fails where `.ci/run`, which builds in the full checkout,
/// cannot see it.
#[test]
fn the_dockerfile_copies_every_file_the_build_includes() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let build_stage = text.split("\nFROM ").nth(1).expect("a build stage");
    let copied: Vec<String> = build_stage
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
        .flat_map(|l| {
            let mut parts: Vec<&str> = l.split_whitespace().collect();
            parts.pop(); // the destination
            parts
                .into_iter()
                .map(|p| p.trim_end_matches('/').to_owned())
        })
        .collect();
    assert!(copied.iter().any(|c| c == "src"), "{copied:?}");
    let mut files = Vec::new();
    let mut dirs = vec![root().join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let mut included = Vec::new();
    for file in files {
        let code = std::fs::read_to_string(&file).unwrap();
        let code = code.split("#[cfg(test)]").next().unwrap_or_default();
        for (at, _) in code.match_indices("include_") {
            let rest = &code[at..];
            let Some(open) = rest.find("(\"") else {
                continue;
            };
            if !(rest.starts_with("include_str!") || rest.starts_with("include_bytes!")) {
                continue;
            }
            let arg = &rest[open + 2..];
            let rel = &arg[..arg.find('"').unwrap()];
            let path = file.parent().unwrap().join(rel);
            let path = std::fs::canonicalize(&path).unwrap();
            let rel = path
                .strip_prefix(std::fs::canonicalize(root()).unwrap())
                .unwrap();
            included.push(rel.to_string_lossy().into_owned());
        }
    }
    assert!(
        !included.is_empty(),
        "found no include_str! (the settings example is one)"
    );
    for file in included {
        assert!(
            copied
                .iter()
                .any(|c| file == *c || file.starts_with(&format!("{c}/"))),
            "the build includes {file}, but the Dockerfile's build stage copies only \
             {copied:?}: add a COPY for it"
        );
    }
}
