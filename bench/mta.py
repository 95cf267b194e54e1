#!/usr/bin/env python3
"""The two MTAs under test, each run privately on a loopback port with its
own temporary mbox spool, and the helpers the benchmark shares: free ports,
process memory from /proc, counting messages in mbox files.

    python3 bench/mta.py verify     start each MTA, send one message, check
                                    that it reached the mailbox, stop
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PFROOT = BENCH / ".postfix" / "root"
DOMAIN = "bench.test"
# smtp-source with -t bench@bench.test -r N sends RCPT TO for
# Nbench .. 2bench, then bench: these are real system users
# (bench/postfix-setup creates them).
USERS = ["bench", "2bench", "3bench", "4bench"]
MAX_SIZE = 40 * 1024 * 1024


def postie_binary():
    target = os.environ.get("CARGO_TARGET_DIR", REPO / "target")
    return Path(os.environ.get("POSTIE", Path(target) / "release" / "postie"))


def postfix_env():
    env = dict(os.environ)
    envfile = BENCH / ".postfix" / "env"
    if envfile.exists():
        for line in envfile.read_text().splitlines():
            k, _, v = line.partition("=")
            env[k] = v
    else:
        env["LD_LIBRARY_PATH"] = str(PFROOT / "usr/lib/postfix")
    return env


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.settimeout(5)
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"nothing answers 220 on 127.0.0.1:{port}")


def wait_unix(path, timeout=20.0, proc=None):
    """As wait_port, for a server on the Unix socket `path` (LMTP)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode}")
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(str(path))
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"nothing answers 220 on {path}")


def make_cert(directory):
    """A self-signed ECDSA P-256 certificate for bench.test and its key, in
    `directory` (the key root's, 0600): the pair both MTAs serve TLS with.
    Returns (certificate file, key file)."""
    cert, key = Path(directory) / "cert.pem", Path(directory) / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                    "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2",
                    "-subj", f"/CN={DOMAIN}", "-addext", f"subjectAltName=DNS:{DOMAIN}"],
                   check=True, stdin=subprocess.DEVNULL, capture_output=True)
    os.chmod(key, 0o600)
    os.chmod(cert, 0o644)
    return cert, key


def make_workdir(name):
    base = os.environ.get("BENCH_TMPDIR", tempfile.gettempdir())
    work = Path(tempfile.mkdtemp(prefix=f"postie-bench-{name}.", dir=base))
    # Recipients' delivery processes must be able to reach the spool.
    os.chmod(work, 0o755)
    spool = work / "spool"
    spool.mkdir()
    # As Debian's /var/mail: root:mail 2775.
    os.chown(spool, 0, mail_gid())
    os.chmod(spool, 0o2775)
    return work, spool


def mail_gid():
    import grp

    try:
        return grp.getgrnam("mail").gr_gid
    except KeyError:
        return 0


# ---------------------------------------------------------------- /proc


def proc_status(pid):
    """VmRSS and VmHWM of a process, in KiB (None if it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            k, v = line.split(":", 1)
            out[k] = int(v.split()[0])
    return out


def pids_by_exe(prefix):
    """Processes whose executable lies under `prefix` (a path or file)."""
    prefix = str(prefix)
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            exe = os.readlink(f"/proc/{entry}/exe")
        except OSError:
            continue
        if exe == prefix or exe.startswith(prefix.rstrip("/") + "/"):
            pids.append(int(entry))
    return pids


def ppid_map():
    """pid -> parent pid, for every process (one pass over /proc)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        out[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def descendants(root):
    """`root` and all its descendants that are alive."""
    parents = ppid_map()
    if root not in parents:
        return []
    kids = {}
    for pid, ppid in parents.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def pss_kib(pids):
    """Sum of the proportional set size over `pids`, KiB: shared pages
    (libraries, the same binary in many processes) are counted once."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def rss_kib(pids):
    """Sum of VmRSS and of VmHWM over `pids`, KiB."""
    rss = hwm = 0
    for pid in pids:
        st = proc_status(pid)
        if st:
            rss += st.get("VmRSS", 0)
            hwm += st.get("VmHWM", 0)
    return rss, hwm


# ---------------------------------------------------------------- mboxes


class MboxCounter:
    """Counts messages in mbox files incrementally: each call reads only
    what was appended since the last one. A message is counted once its
    separator line `From ` (at the start of the file or after a newline) is
    there and the file ends with the blank line that closes the message.
    Body lines that begin with "From " are quoted by both MTAs (">From ").
    """

    def __init__(self, path):
        self.path = Path(path)
        self.offset = 0
        self.tail = b"\n"  # the file start counts as after a newline
        self.count = 0

    def update(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                while True:
                    chunk = f.read(1 << 22)
                    if not chunk:
                        break
                    data = self.tail + chunk
                    self.count += data.count(b"\nFrom ")
                    self.tail = data[-5:]
                    self.offset += len(chunk)
        except FileNotFoundError:
            pass
        return self.count


def count_messages(path):
    return MboxCounter(path).update()


# ---------------------------------------------------------------- postie


class Postie:
    name = "postie"

    def __init__(self, wrapper=(), tls=None, lmtp=None, spool=None):
        # wrapper: a command to run postie under (valgrind, for bench/profile)
        # tls: (certificate file, key file) for STARTTLS (--tls-cert, --tls-key)
        # lmtp: run `postie lmtp --listen LMTP` (a Unix socket's path)
        #   instead of `postie serve`, delivering into `spool` (another
        #   MTA's spool: Postfix's, which hands it the mail)
        self.wrapper = list(wrapper)
        self.tls = tls
        self.lmtp = lmtp
        self.work, self.spool = make_workdir("postie")
        if spool is not None:
            self.spool = Path(spool)
        self.port = None
        self.proc = None
        self.log = self.work / "postie.log"

    def start(self):
        import pwd

        passwd = self.work / "passwd"
        lines = []
        for u in USERS:
            pw = pwd.getpwnam(u)
            lines.append(f"{u}:x:{pw.pw_uid}:{pw.pw_gid}::/nonexistent:/usr/sbin/nologin")
        passwd.write_text("\n".join(lines) + "\n")
        os.chmod(passwd, 0o644)
        conf = self.work / "postie.conf"
        conf.write_text("# empty: the benchmark's settings are all on the command line\n")
        os.chmod(conf, 0o644)
        tmp = self.work / "tmp"
        tmp.mkdir()
        os.chmod(tmp, 0o1777)
        # A queue of its own (root's, 0700), as the package makes one.
        queue = self.work / "queue"
        queue.mkdir()
        os.chmod(queue, 0o700)
        # What `postie serve` and `postie lmtp` share.
        common = [
            "--spool", str(self.spool),
            "--hostname", DOMAIN,
            "--log", "stderr", "--log-level", "warn",
            "--max-connections", "2000", "--max-per-client", "2000",
            "--max-size", str(MAX_SIZE),
            "--passwd", str(passwd),
            "--aliases", "",
            "--temp-dir", str(tmp),
            "--queue-dir", str(queue),
            "--submit-socket", str(self.work / "submit.sock"),
        ]
        if self.lmtp:
            # The socket is 0600 unless given a group: Postfix's lmtp
            # client runs as postfix.
            self.cmd = [str(postie_binary()), "-C", str(conf), "lmtp",
                        "--listen", str(self.lmtp), "--lmtp-socket-group", "postfix"] + common
            probe = subprocess.run([str(postie_binary()), "lmtp", "--help"],
                                   stdin=subprocess.DEVNULL, capture_output=True, text=True)
            if probe.returncode != 0:
                raise RuntimeError("this postie has no lmtp command (`postie lmtp --help`: "
                                   + (probe.stderr.strip().splitlines() or ["?"])[0] + ")")
        else:
            self.port = free_port()
            self.cmd = [str(postie_binary()), "-C", str(conf), "serve",
                        "--listen", f"127.0.0.1:{self.port}"] + common
            if self.tls:
                self.cmd += ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen(self.wrapper + self.cmd, stdin=subprocess.DEVNULL,
                                     stdout=self.logf, stderr=self.logf,
                                     preexec_fn=raise_nofile)
        try:
            if self.lmtp:
                wait_unix(self.lmtp, proc=self.proc)
            else:
                wait_port(self.port, proc=self.proc, timeout=120 if self.wrapper else 20)
        except RuntimeError as e:
            self.stop()
            lines = self.log.read_text(errors="replace").strip().splitlines()
            # clap's "error: ..." line rather than the usage after it
            said = [x for x in lines if x.startswith("error")][:1] or lines[-2:]
            raise RuntimeError(f"postie {self.cmd[3]}: {e}"
                               + (f"; it said: {' / '.join(said)}" if said else "")) from None
        return self

    def smtp_pid(self):
        """The process that speaks SMTP (postie's first process)."""
        return self.proc.pid

    def delivery_pid(self):
        """The delivery process, when started as root (privilege separation)."""
        kids = [p for p in descendants(self.proc.pid) if p != self.proc.pid]
        return kids[0] if kids else None

    def pids(self):
        if self.proc is None or self.proc.poll() is not None:
            return []
        return descendants(self.proc.pid)

    def idle(self):
        return True

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "logf", None):
            self.logf.close()

    def cleanup(self):
        shutil.rmtree(self.work, ignore_errors=True)


def raise_nofile():
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(max(hard, 65536), 1 << 20)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ---------------------------------------------------------------- Postfix

MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command
127.0.0.1:{port} inet n  -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

MAIN_CF = """\
# A private Postfix for postie's benchmark: loopback only, local delivery
# into mbox files in {spool}, no DNS, no aliases, no rate limits.
compatibility_level = 3.6
queue_directory = {work}/queue
data_directory = {work}/data
daemon_directory = {pf}/usr/lib/postfix/sbin
command_directory = {pf}/usr/sbin
shlib_directory = {pf}/usr/lib/postfix
meta_directory = {conf}
sample_directory = {conf}
manpage_directory = {pf}/usr/share/man
html_directory = no
readme_directory = no
sendmail_path = {pf}/usr/sbin/sendmail
newaliases_path = {pf}/usr/bin/newaliases
mailq_path = {pf}/usr/bin/mailq
mail_owner = postfix
setgid_group = postdrop
import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C LD_LIBRARY_PATH={ldpath}
syslog_name = postfix-bench
{maillog}
myhostname = {domain}
mydomain = {domain}
myorigin = $myhostname
mydestination = $myhostname, localhost
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost =
smtpd_banner = $myhostname ESMTP
biff = no
append_dot_mydomain = no
# no DNS: the client's name is not looked up, nor anything else
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
# mbox files in the private spool (no trailing slash: that would be Maildir)
mail_spool_directory = {spool}
home_mailbox =
mailbox_command =
mailbox_transport =
fallback_transport =
mailbox_size_limit = 0
message_size_limit = {max_size}
alias_maps =
alias_database =
local_recipient_maps = proxy:unix:passwd.byname
# no rate limits (these are the defaults, stated)
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_client_recipient_rate_limit = 0
smtpd_client_connection_count_limit = 0
anvil_rate_time_unit = 60s
smtputf8_enable = no
{extra}"""

# bench/run --tls: STARTTLS offered, TLS 1.2 and 1.3 (the client picks 1.3),
# no session cache (the driver never resumes a session anyway).
MAIN_CF_TLS = """\
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_security_level = may
smtpd_tls_protocols = >=TLSv1.2
smtpd_tls_mandatory_protocols = >=TLSv1.2
smtpd_tls_loglevel = 0
smtpd_tls_session_cache_database =
"""
MASTER_CF_TLS = "tlsmgr    unix  -       -       n       1000?   1       tlsmgr\n"

# bench/run --lmtp: local(8) hands mailbox delivery to LMTP on a Unix socket.
MAIN_CF_LMTP = "mailbox_transport = lmtp:unix:{socket}\n"


class Postfix:
    name = "postfix"

    def __init__(self, maillog=False, tls=None, lmtp=False):
        # tls: (certificate file, key file) for STARTTLS
        # lmtp: mailbox delivery through `postie lmtp` on a Unix socket
        #   (started and stopped with Postfix; its processes are counted
        #   as Postfix's)
        self.work, self.spool = make_workdir("postfix")
        self.conf = self.work / "conf"
        self.port = None
        self.maillog = maillog
        self.tls = tls
        self.lmtp = None
        if lmtp:
            self.name = "postfix+postie-lmtp"
            sockdir = self.work / "lmtp"
            sockdir.mkdir()
            os.chmod(sockdir, 0o755)
            self.lmtp = Postie(lmtp=sockdir / "lmtp.sock", spool=self.spool)
        self.env = postfix_env()

    def postfix(self, *args, check=True):
        return subprocess.run(
            [str(PFROOT / "usr/sbin/postfix"), "-c", str(self.conf), *args],
            env=self.env, check=check, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def start(self):
        if not (PFROOT / "usr/sbin/postfix").exists():
            raise RuntimeError("no Postfix in bench/.postfix: run bench/postfix-setup")
        self.conf.mkdir()
        # postfix-files and friends: what post-install checks and creates.
        for item in (PFROOT / "etc/postfix").iterdir():
            if item.is_dir():
                shutil.copytree(item, self.conf / item.name)
            else:
                shutil.copy2(item, self.conf / item.name)
        (self.work / "queue").mkdir()
        (self.work / "data").mkdir()
        import pwd

        pw = pwd.getpwnam("postfix")
        os.chown(self.work / "data", pw.pw_uid, pw.pw_gid)
        self.port = free_port()
        maillog = (f"maillog_file = {self.work}/maillog\nmaillog_file_prefixes = {self.work}"
                   if self.maillog else "")
        extra = ""
        master = MASTER_CF.format(port=self.port)
        if self.tls:
            extra += MAIN_CF_TLS.format(cert=self.tls[0], key=self.tls[1])
            master += MASTER_CF_TLS
        if self.lmtp:
            # postie first: Postfix's first delivery must find it listening
            self.lmtp.start()
            extra += MAIN_CF_LMTP.format(socket=self.lmtp.lmtp)
        (self.conf / "main.cf").write_text(MAIN_CF.format(
            work=self.work, pf=PFROOT, conf=self.conf, spool=self.spool,
            domain=DOMAIN, ldpath=self.env["LD_LIBRARY_PATH"],
            maillog=maillog, max_size=MAX_SIZE, extra=extra))
        (self.conf / "master.cf").write_text(master)
        out = self.postfix("start", check=False)
        if out.returncode != 0:
            raise RuntimeError(f"postfix start failed:\n{out.stdout}")
        wait_port(self.port)
        return self

    def master_pid(self):
        try:
            return int((self.work / "queue/pid/master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def pids(self):
        """The master and all its descendants (and postie lmtp's)."""
        master = self.master_pid()
        return (descendants(master) if master else []) + (self.lmtp.pids() if self.lmtp else [])

    def queue_reasons(self, n=3):
        """The first `n` distinct reasons in `postqueue -p`, for a run
        whose mail was deferred."""
        out = subprocess.run([str(PFROOT / "usr/sbin/postqueue"), "-c", str(self.conf), "-p"],
                             env=self.env, stdin=subprocess.DEVNULL, capture_output=True,
                             text=True).stdout
        reasons = []
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("(") and line not in reasons:
                reasons.append(line)
        return reasons[:n]

    def idle(self):
        """True when no message is in the queue."""
        q = self.work / "queue"
        for sub in ("maildrop", "incoming", "active", "deferred", "hold"):
            d = q / sub
            if not d.exists():
                continue
            for _, _, files in os.walk(d):
                if files:
                    return False
        return True

    def deferred(self):
        n = 0
        for _, _, files in os.walk(self.work / "queue" / "deferred"):
            n += len(files)
        return n

    def stop(self):
        master = self.master_pid()
        self.postfix("stop", check=False)
        deadline = time.monotonic() + 30
        while master and os.path.exists(f"/proc/{master}") and time.monotonic() < deadline:
            time.sleep(0.1)
        # Its children exit on their own once the master is gone.
        time.sleep(0.2)
        if self.lmtp:
            self.lmtp.stop()

    def cleanup(self):
        if self.lmtp:
            self.lmtp.cleanup()
        shutil.rmtree(self.work, ignore_errors=True)


# ---------------------------------------------------------------- verify


def send_one(port, rcpts, body=b"Subject: bench verify\r\n\r\nhello\r\n"):
    import smtplib

    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.sendmail(f"verify@{DOMAIN}", [f"{r}@{DOMAIN}" for r in rcpts], body)


def wait_count(spool, user, want, timeout=30):
    path = Path(spool) / user
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if count_messages(path) >= want:
            return True
        time.sleep(0.05)
    return False


def verify():
    ok = True
    for cls in (Postfix, Postie):
        mta = cls(maillog=True) if cls is Postfix else cls()
        good = False
        try:
            mta.start()
            send_one(mta.port, USERS)
            good = all(wait_count(mta.spool, u, 1) for u in USERS)
            print(f"verify {mta.name}: 127.0.0.1:{mta.port}, one message to "
                  f"{len(USERS)} mailboxes: {'delivered' if good else 'MISSING'}")
            if not good:
                ok = False
                if cls is Postfix and (mta.work / "maillog").exists():
                    sys.stdout.write((mta.work / "maillog").read_text()[-4000:])
                if cls is Postie:
                    sys.stdout.write(mta.log.read_text()[-4000:])
        finally:
            mta.stop()
            ok = ok and good
            if good:
                mta.cleanup()
            else:
                print(f"kept {mta.work}")
    return ok


if __name__ == "__main__":
    if sys.argv[1:] == ["verify"]:
        sys.exit(0 if verify() else 1)
    print(__doc__)
    sys.exit(2)
