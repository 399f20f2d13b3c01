#!/usr/bin/env bash
# Capture docs/transcript.txt: a first run, `doctor` (good and with an expired token) and
# `exec`, from the real binary on a pseudo-terminal (`script`), against the stand-in
# master in docs/standin-master.py. Needs bash, python3, curl and util-linux `script`.
#   cargo build --release && bash docs/make-transcript.sh target/release/dcos-token-proxy
set -euo pipefail
BIN=$(realpath "${1:-target/release/dcos-token-proxy}")
DOCS=$(cd "$(dirname "$0")" && pwd)
DEMO=$(mktemp -d)
trap 'kill $MASTER 2>/dev/null || true; rm -rf "$DEMO"' EXIT
jwt() { # uid, seconds from now
  python3 -c 'import base64,json,sys,time
b=lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
print(b({"alg":"RS256","typ":"JWT"})+"."+b({"uid":sys.argv[1],"exp":int(time.time())+int(sys.argv[2])})+".c2lnbmF0dXJl")' "$1" "$2"
}
TOKEN=$(jwt alice 18000)
python3 "$DOCS/standin-master.py" 18442 "$TOKEN" & MASTER=$!
mkdir -p "$DEMO/.dcos/clusters/5b1e3c6a"
cat > "$DEMO/.dcos/clusters/5b1e3c6a/dcos.toml" <<TOML
[core]
dcos_url = "http://127.0.0.1:18442"
dcos_acs_token = "$TOKEN"

[cluster]
name = "lab"
TOML
touch "$DEMO/.dcos/clusters/5b1e3c6a/attached"
cat > "$DEMO/session.sh" <<SESSION
set -u
show() { printf '\n$ %s\n' "\$*"; }
show dcos-token-proxy
"$BIN" & sleep 1
show curl http://127.0.0.1:8079/service/marathon/v2/apps
curl -s http://127.0.0.1:8079/service/marathon/v2/apps
sleep 0.2; show '# Ctrl-C'; kill -INT %1; wait %1; echo "(exit status \$?)"
show dcos-token-proxy doctor
"$BIN" doctor; echo "(exit status \$?)"
show 'DCOS_ACS_TOKEN=<an expired token> dcos-token-proxy doctor'
DCOS_ACS_TOKEN=$(jwt alice -7200) "$BIN" doctor; echo "(exit status \$?)"
show 'dcos-token-proxy exec -- sh -c '"'"'echo \$DCOS_URL; curl -s \$DCOS_URL/service/marathon/v2/apps; exit 3'"'"
"$BIN" exec -- sh -c 'echo \$DCOS_URL; curl -s \$DCOS_URL/service/marathon/v2/apps; exit 3'; echo "(exit status \$?)"
SESSION
sleep 0.5
env -i HOME="$DEMO" PATH="$PATH" TERM=dumb NO_COLOR=1 \
  script -q -e -c "bash $DEMO/session.sh" /dev/null \
  | sed -e "s|$DEMO|/home/you|g" -e 's/\r$//' > "$DOCS/transcript.txt"
echo "wrote $DOCS/transcript.txt"
