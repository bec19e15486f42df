#!/usr/bin/env bash
# popferry demo, one command, on a Debian/Ubuntu machine:
#
#   scripts/demo.sh            # as root, or as a user with sudo (for apt-get only)
#
# 1. installs dovecot-core dovecot-imapd dovecot-pop3d openssl python3 if missing;
# 2. starts a private Dovecot in a temp folder on 127.0.0.1 (POP3S and IMAPS
#    with a generated CA; nothing in /etc is touched, the config is
#    tests/fixtures/dovecot.conf.in, the same the tests use);
# 3. seeds the POP3 mailbox of "alice" with ~24 varied messages;
# 4. writes a popferry config, builds popferry (cargo build), runs
#    `popferry sync`, `popferry status`, and `popferry sync` again (copies nothing);
# 5. shows what arrived in the IMAP mailbox of "dave", then stops Dovecot.
#
# KEEP=1 keeps the temp folder (config, ledger, Dovecot log) afterwards;
# POPFERRY=/path/to/popferry uses that binary instead of building one.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TEMPLATE=$REPO/tests/fixtures/dovecot.conf.in

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root or sudo to run: $*"
  fi
}

# ---------------------------------------------------------------- packages
say "Checking packages"
need=()
for p in dovecot-core dovecot-imapd dovecot-pop3d openssl python3; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if ((${#need[@]})); then
  echo "installing: ${need[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
  # The packaged Dovecot service is not needed (the demo runs its own): don't leave it listening.
  if command -v systemctl >/dev/null && systemctl is-active --quiet dovecot 2>/dev/null; then
    as_root systemctl disable --now dovecot >/dev/null 2>&1 || true
  fi
else
  echo "dovecot, openssl and python3 are installed"
fi
DOVECOT=/usr/sbin/dovecot
[[ -x $DOVECOT ]] || DOVECOT=$(command -v dovecot) || die "dovecot not found after install"
command -v cargo >/dev/null || die "cargo not found: install Rust first (https://rustup.rs: curl https://sh.rustup.rs -sSf | sh)"

# ---------------------------------------------------------------- folder, cleanup
BASE=$(mktemp -d /tmp/pfdemo.XXXXXX)   # short: Dovecot's unix socket paths are limited
chmod 755 "$BASE"
mkdir -p "$BASE"/{run,state,log,etc,tls,mail}
cleanup() {
  local pid
  if [[ -s $BASE/run/master.pid ]]; then
    pid=$(cat "$BASE/run/master.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
      echo "dovecot stopped"
    fi
  fi
  if [[ ${KEEP:-0} == 1 ]]; then
    echo "kept: $BASE (config popferry.toml, ledger.db, log/dovecot.log)"
  else
    rm -rf "$BASE"
  fi
}
trap cleanup EXIT

# ---------------------------------------------------------------- identities
if [[ $(id -u) -eq 0 ]]; then
  MAIL_USER=mail
  id -u "$MAIL_USER" >/dev/null 2>&1 || MAIL_USER=root
  INTERNAL_USER=dovecot INTERNAL_GROUP=dovecot LOGIN_USER=dovenull
  AS_USER=0
else
  MAIL_USER=$(id -un)
  INTERNAL_USER=$MAIL_USER INTERNAL_GROUP=$(id -gn) LOGIN_USER=$MAIL_USER
  AS_USER=1
fi
MAIL_UID=$(id -u "$MAIL_USER")
MAIL_GID=$(id -g "$MAIL_USER")

# ---------------------------------------------------------------- TLS
say "Generating a test CA and a server certificate for localhost / 127.0.0.1"
cat >"$BASE/tls/openssl.cnf" <<'CNF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF
(
  cd "$BASE/tls"
  openssl req -config openssl.cnf -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -days 30 -sha256 -subj "/CN=popferry demo CA" -extensions ca_ext -keyout ca.key -out ca.pem 2>/dev/null
  openssl req -config openssl.cnf -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial "0x$(openssl rand -hex 8)" \
    -days 30 -sha256 -extfile openssl.cnf -extensions leaf -out server.pem 2>/dev/null
  chmod 600 ca.key server.key
)
echo "CA: $BASE/tls/ca.pem"

# ---------------------------------------------------------------- users, config
mkdir -p "$BASE/mail/alice/Maildir"/{cur,new,tmp} "$BASE/mail/dave"
cat >"$BASE/etc/users" <<USERS
alice:{PLAIN}secret:$MAIL_UID:$MAIL_GID::$BASE/mail/alice::userdb_mail=maildir:~/Maildir
dave:{PLAIN}secret:$MAIL_UID:$MAIL_GID::$BASE/mail/dave::userdb_mail=mdbox:~/mdbox
USERS
if ((AS_USER == 0)); then chown -R "$MAIL_UID:$MAIL_GID" "$BASE/mail"; fi

# Four free ports on 127.0.0.1.
read -r POP3_PORT POP3S_PORT IMAP_PORT IMAPS_PORT < <(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
PY
)

BASE=$BASE TEMPLATE=$TEMPLATE AS_USER=$AS_USER MAIL_UID=$MAIL_UID MAIL_GID=$MAIL_GID \
INTERNAL_USER=$INTERNAL_USER INTERNAL_GROUP=$INTERNAL_GROUP LOGIN_USER=$LOGIN_USER \
POP3_PORT=$POP3_PORT POP3S_PORT=$POP3S_PORT IMAP_PORT=$IMAP_PORT IMAPS_PORT=$IMAPS_PORT \
python3 - <<'PY'
import os
e = os.environ
overrides = ""
if e["AS_USER"] == "1":   # an ordinary user: no chroot, no user switching
    for s in ("imap-login", "pop3-login", "anvil"):
        overrides += "service %s {\n  chroot =\n}\n" % s
    for s in ("auth", "auth-worker", "stats", "imap-hibernate"):
        overrides += "service %s {\n  user = %s\n}\n" % (s, e["INTERNAL_USER"])
subst = {
    "BASE": e["BASE"], "INSTANCE": os.path.basename(e["BASE"]).replace(".", "-") + "-dovecot",
    "GREETING": "popferry demo Dovecot ready", "INTERNAL_USER": e["INTERNAL_USER"],
    "INTERNAL_GROUP": e["INTERNAL_GROUP"], "LOGIN_USER": e["LOGIN_USER"],
    "MAIL_UID": e["MAIL_UID"], "MAIL_GID": e["MAIL_GID"],
    "POP3_PORT": e["POP3_PORT"], "POP3S_PORT": e["POP3S_PORT"],
    "IMAP_PORT": e["IMAP_PORT"], "IMAPS_PORT": e["IMAPS_PORT"],
    "SERVICE_OVERRIDES": overrides, "EXTRA": "",
}
text = open(e["TEMPLATE"]).read()
for k, v in subst.items():
    text = text.replace("@%s@" % k, v)
open(os.path.join(e["BASE"], "dovecot.conf"), "w").write(text)
PY

# ---------------------------------------------------------------- start Dovecot
say "Starting a private Dovecot in $BASE"
TZ=UTC "$DOVECOT" -c "$BASE/dovecot.conf" || { tail -20 "$BASE/log/dovecot.log" 2>/dev/null; die "dovecot did not start"; }
for port in "$POP3_PORT" "$POP3S_PORT" "$IMAP_PORT" "$IMAPS_PORT"; do
  for i in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    ((i == 100)) && { tail -20 "$BASE/log/dovecot.log"; die "port $port not listening"; }
    sleep 0.1
  done
done
echo "POP3S 127.0.0.1:$POP3S_PORT (alice/secret)   IMAPS 127.0.0.1:$IMAPS_PORT (dave/secret)"

# ---------------------------------------------------------------- seed alice
say "Seeding alice's POP3 mailbox"
MAILDIR=$BASE/mail/alice/Maildir OWNER="$MAIL_UID:$MAIL_GID" AS_USER=$AS_USER python3 - <<'PY'
import base64, email.utils, os, random
rng = random.Random(7)
maildir, (uid, gid) = os.environ["MAILDIR"], map(int, os.environ["OWNER"].split(":"))
words = "ferry harbour tide mail copy once bridge letter parcel morning evening quay rope".split()
def para(n):
    return "\n".join(" ".join(rng.choice(words) for _ in range(10)) for _ in range(n)) + "\n"
kinds = ["plain", "utf-8 body", "attachment", "dot lines", "utf-8 subject", "no message-id",
         "long line", "headers only"]
for i in range(24):
    kind = kinds[i % len(kinds)]
    ts = 1700000000 + i * 3600
    date = email.utils.formatdate(ts)
    subject = "Demo %02d: %s" % (i + 1, kind)
    hdr = ["From: Old Provider <news@pop.example>", "To: Alice <alice@example.net>", "Date: " + date,
           "Received: from mx.pop.example by pop.example; " + date]
    if kind != "no message-id":
        hdr.append("Message-ID: <demo-%d@pop.example>" % (i + 1))
    if kind == "utf-8 subject":
        subject = "Demo %02d: Grüße aus Köln – 日本語" % (i + 1)
    hdr.append("Subject: " + subject)
    hdr.append("MIME-Version: 1.0")
    body = para(5)
    if kind == "utf-8 body":
        hdr += ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"]
        body = "Smørrebrød, naïve café, Привет, 你好 \U0001F4EC\n" + para(3)
    elif kind == "attachment":
        blob = base64.encodebytes(rng.randbytes(20000)).decode()
        hdr.append('Content-Type: multipart/mixed; boundary="b%d"' % i)
        body = ("--b%d\nContent-Type: text/plain\n\n%s--b%d\nContent-Type: application/octet-stream\n"
                "Content-Transfer-Encoding: base64\nContent-Disposition: attachment; filename=\"blob.bin\"\n\n"
                "%s--b%d--\n" % (i, para(2), i, blob, i))
    elif kind == "dot lines":
        body = para(2) + ".\n..\n. a line starting with a dot\n" + para(1) + ".\n"
    elif kind == "long line":
        body = "x" * 5000 + "\n" + para(2)
    text = "\n".join(hdr) + "\n" + ("" if kind == "headers only" else "\n" + body)
    name = "%d.M%06dP%dQ%d.demo" % (ts, i, os.getpid(), i)
    tmp = os.path.join(maildir, "tmp", name)
    with open(tmp, "wb") as f:
        f.write(text.encode())
    os.utime(tmp, (ts, ts))
    if os.environ["AS_USER"] == "0":
        os.chown(tmp, uid, gid)
    os.rename(tmp, os.path.join(maildir, "new", name))
print("24 messages in %s/new" % maildir)
PY

# ---------------------------------------------------------------- popferry config
CONFIG=$BASE/popferry.toml
cat >"$CONFIG" <<TOML
# popferry demo: POP3 alice -> IMAP dave, both over TLS trusting the demo CA.
[ledger]
path = "$BASE/ledger.db"

[[accounts]]
name = "demo"

[accounts.source]
host = "127.0.0.1"
port = $POP3S_PORT
tls = "implicit"
username = "alice"
password = { env = "DEMO_POP3_PASSWORD" }
ca_file = "$BASE/tls/ca.pem"

[accounts.target]
host = "127.0.0.1"
port = $IMAPS_PORT
tls = "implicit"
username = "dave"
password = { env = "DEMO_IMAP_PASSWORD" }
ca_file = "$BASE/tls/ca.pem"
mailbox = "INBOX"
internal_date = "received"

[accounts.policy]
delete = "never"
max_message_size = "50MiB"
TOML
export DEMO_POP3_PASSWORD=secret DEMO_IMAP_PASSWORD=secret
say "popferry config ($CONFIG)"
cat "$CONFIG"

# ---------------------------------------------------------------- build, run
if [[ -n ${POPFERRY:-} ]]; then
  say "Using the popferry binary $POPFERRY"
else
  say "Building popferry (cargo build)"
  (cd "$REPO" && cargo build --bin popferry)
  POPFERRY=${CARGO_TARGET_DIR:-$REPO/target}/debug/popferry
fi

run() {
  echo "\$ popferry $*"
  local rc=0
  "$POPFERRY" "$@" || rc=$?
  echo "(exit status $rc)"
}
say "popferry sync"
run sync -c "$CONFIG"
say "popferry status"
run status -c "$CONFIG"
say "popferry sync, again: nothing new to copy"
run sync -c "$CONFIG"

# ---------------------------------------------------------------- what arrived
say "What arrived in dave's IMAP INBOX"
CA=$BASE/tls/ca.pem PORT=$IMAPS_PORT python3 - <<'PY'
import email.header, imaplib, os, ssl
ctx = ssl.create_default_context(cafile=os.environ["CA"])
m = imaplib.IMAP4_SSL("localhost", int(os.environ["PORT"]), ssl_context=ctx)
m.login("dave", "secret")
typ, data = m.select("INBOX", readonly=True)
count = int(data[0])
print("%d messages in INBOX" % count)
if count:
    typ, data = m.fetch("1:*", "(INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    for item in data:
        if not isinstance(item, tuple):
            continue
        meta, hdr = item
        raw = hdr.decode("utf-8", "replace").split(":", 1)[-1].strip()
        subject = str(email.header.make_header(email.header.decode_header(raw))) if raw else "(no subject)"
        size = meta.decode().split("RFC822.SIZE ")[1].split(" ")[0]
        date = meta.decode().split('INTERNALDATE "')[1].split('"')[0]
        print("  %s  %7s bytes  %s" % (date, size, subject))
m.logout()
PY

say "Done: stopping Dovecot"
