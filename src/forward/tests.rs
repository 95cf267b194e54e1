//! The attacker with a shell on the host, against `~/.forward` and
//! `:include:` files: each way of slipping someone else's words into a
//! user's forwarding must come back `Unsafe` (the mailbox), and the
//! honest files must be read. As root the files belong to real uids
//! (65534, and `tester` or 65533 as "someone else") and are read with
//! their filesystem identity; as an ordinary user everything is ours and
//! the tests that need another owner print `SKIP`.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use super::*;
use crate::aliases::Target;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The uid and gid of the user whose files these are: 65534 as root,
/// ourselves otherwise.
fn victim() -> (u32, u32) {
    if is_root() {
        (65534, 65534)
    } else {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    }
}

/// Someone else (root only): `tester` if the host has it, else 65533.
fn intruder() -> (u32, u32) {
    match nix::unistd::User::from_name("tester") {
        Ok(Some(u)) if u.uid.as_raw() != 65534 && u.uid.as_raw() != 0 => {
            (u.uid.as_raw(), u.gid.as_raw())
        }
        _ => (65533, 65533),
    }
}

/// Prints `SKIP` and returns true if not root.
fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    println!("SKIP {test}: needs root to own files as another uid");
    true
}

fn chown(path: &Path, (uid, gid): (u32, u32)) {
    if is_root() {
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            path,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .unwrap();
    }
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A host: a temporary directory (mode 0755, so other uids may pass)
/// holding the victim's home, mode 0755.
struct Host {
    dir: tempfile::TempDir,
    home: PathBuf,
}

impl Host {
    fn new() -> Host {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o755);
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        chmod(&home, 0o755);
        chown(&home, victim());
        Host { dir, home }
    }

    fn user(&self) -> User {
        let (uid, gid) = victim();
        User {
            name: "victim".to_owned(),
            uid,
            gid,
            home: self.home.clone(),
            shell: "/bin/sh".to_owned(),
        }
    }

    fn forward(&self) -> PathBuf {
        self.home.join(".forward")
    }

    /// Writes `path` with `text`, `mode`, owned by `owner`.
    fn write(&self, path: &Path, text: &[u8], mode: u32, owner: (u32, u32)) {
        std::fs::write(path, text).unwrap();
        chmod(path, mode);
        chown(path, owner);
    }

    /// The victim's `.forward`: mode 0644, theirs.
    fn write_forward(&self, text: &str) {
        self.write(&self.forward(), text.as_bytes(), 0o644, victim());
    }

    fn read(&self) -> ForwardFile {
        read_forward(&self.user())
    }
}

#[track_caller]
fn assert_unsafe(got: ForwardFile, what: &str) {
    match got {
        ForwardFile::Unsafe(why) => assert!(why.contains(what), "{why:?} should say {what:?}"),
        other => panic!("{other:?} should be Unsafe: {what}"),
    }
}

#[track_caller]
fn assert_targets(got: ForwardFile, want: &[Target]) {
    match got {
        ForwardFile::Targets { targets, warnings } => {
            assert_eq!(targets, want);
            assert!(warnings.is_empty(), "{warnings:?}");
        }
        other => panic!("{other:?} should be {want:?}"),
    }
}

fn local(name: &str) -> Target {
    Target::Local(name.to_owned())
}

fn cmd(command: &str) -> Target {
    Target::Command(command.to_owned())
}

const PROCMAIL: &str = "# my filter\n\\victim, \"|/usr/bin/procmail -a x, y\"\nbob@example.org\n";

fn procmail_targets() -> Vec<Target> {
    vec![
        Target::User("victim".to_owned()),
        cmd("/usr/bin/procmail -a x, y"),
        Target::Address {
            local: "bob".to_owned(),
            domain: "example.org".to_owned(),
        },
    ]
}

#[test]
fn a_safe_forward_is_read_in_order() {
    let host = Host::new();
    host.write_forward(PROCMAIL);
    assert_targets(host.read(), &procmail_targets());
}

#[test]
fn a_forward_owned_by_root_is_read() {
    if skip_unless_root("a_forward_owned_by_root_is_read") {
        return;
    }
    let host = Host::new();
    host.write(&host.forward(), PROCMAIL.as_bytes(), 0o644, (0, 0));
    assert_targets(host.read(), &procmail_targets());
}

#[test]
fn no_forward_no_home_or_no_entries_is_the_mailbox() {
    let host = Host::new();
    assert_eq!(host.read(), ForwardFile::Absent, "no .forward");
    host.write_forward("# nothing yet\n\n   \n");
    assert_eq!(host.read(), ForwardFile::Absent, "only comments");
    for home in [
        host.dir.path().join("gone"),
        PathBuf::from("/dev/null"),
        PathBuf::new(),
    ] {
        let user = User {
            home: home.clone(),
            ..host.user()
        };
        assert_eq!(read_forward(&user), ForwardFile::Absent, "{home:?}");
    }
    let user = User {
        home: PathBuf::from("relative/home"),
        ..host.user()
    };
    assert_unsafe(read_forward(&user), "not an absolute path");
}

#[test]
fn a_group_or_world_writable_forward_is_unsafe() {
    let host = Host::new();
    host.write_forward("\\victim\n");
    for (mode, what) in [(0o664, "group-writable"), (0o646, "world-writable")] {
        chmod(&host.forward(), mode);
        assert_unsafe(host.read(), what);
    }
    chmod(&host.forward(), 0o600);
    assert_targets(host.read(), &[Target::User("victim".to_owned())]);
}

#[test]
fn a_forward_owned_by_another_user_is_unsafe() {
    if skip_unless_root("a_forward_owned_by_another_user_is_unsafe") {
        return;
    }
    let host = Host::new();
    host.write(&host.forward(), b"|/bin/evil\n", 0o644, intruder());
    assert_unsafe(host.read(), &format!("owned by uid {}", intruder().0));
}

#[test]
fn a_symlink_to_another_users_file_is_unsafe() {
    if skip_unless_root("a_symlink_to_another_users_file_is_unsafe") {
        return;
    }
    let host = Host::new();
    let theirs = host.dir.path().join("theirs");
    host.write(&theirs, b"|/bin/evil\n", 0o644, intruder());
    symlink(&theirs, host.forward()).unwrap();
    chown(&host.forward(), victim());
    assert_unsafe(host.read(), "symbolic link to a file of uid");
    // Root's file is someone else's too.
    std::fs::remove_file(host.forward()).unwrap();
    let roots = host.dir.path().join("roots");
    host.write(&roots, b"|/bin/evil\n", 0o644, (0, 0));
    symlink(&roots, host.forward()).unwrap();
    chown(&host.forward(), victim());
    assert_unsafe(host.read(), "symbolic link to a file of uid 0");
    // A link the intruder made (in a home they could once write).
    std::fs::remove_file(host.forward()).unwrap();
    let mine = host.home.join("mine");
    host.write(&mine, b"|/bin/evil\n", 0o644, victim());
    symlink(&mine, host.forward()).unwrap();
    chown(&host.forward(), intruder());
    assert_unsafe(host.read(), "is a symbolic link of uid");
}

#[test]
fn a_symlink_to_the_users_own_file_is_followed() {
    let host = Host::new();
    let dotfiles = host.home.join("dotfiles");
    std::fs::create_dir(&dotfiles).unwrap();
    chmod(&dotfiles, 0o755);
    chown(&dotfiles, victim());
    let target = dotfiles.join("forward");
    host.write(&target, PROCMAIL.as_bytes(), 0o644, victim());
    symlink("dotfiles/forward", host.forward()).unwrap();
    chown(&host.forward(), victim());
    assert_targets(host.read(), &procmail_targets());
    // The file it leads to is judged like a .forward.
    chmod(&target, 0o664);
    assert_unsafe(host.read(), "group-writable");
    // A link to a directory or to nothing.
    std::fs::remove_file(host.forward()).unwrap();
    symlink("dotfiles", host.forward()).unwrap();
    chown(&host.forward(), victim());
    assert_unsafe(host.read(), "a directory, not a regular file");
    std::fs::remove_file(host.forward()).unwrap();
    symlink("nowhere", host.forward()).unwrap();
    chown(&host.forward(), victim());
    assert_eq!(host.read(), ForwardFile::Absent);
}

#[test]
fn a_home_others_can_write_is_unsafe() {
    let host = Host::new();
    host.write_forward("\\victim\n");
    for mode in [0o777, 0o775, 0o1777, 0o757] {
        chmod(&host.home, mode);
        assert_unsafe(host.read(), "the directory is writable by others");
    }
    // Without a .forward there is nothing to refuse: the mailbox, quietly.
    std::fs::remove_file(host.forward()).unwrap();
    assert_eq!(host.read(), ForwardFile::Absent);
}

#[test]
fn a_home_owned_by_someone_else_is_unsafe() {
    if skip_unless_root("a_home_owned_by_someone_else_is_unsafe") {
        return;
    }
    let host = Host::new();
    host.write_forward("\\victim\n");
    chown(&host.home, intruder());
    assert_unsafe(host.read(), &format!("owned by uid {}", intruder().0));
    // Root's home directory is fine (chroot and system accounts).
    chown(&host.home, (0, 0));
    assert_targets(host.read(), &[Target::User("victim".to_owned())]);
}

#[test]
fn a_directory_above_the_home_others_can_write_is_unsafe() {
    let host = Host::new();
    host.write_forward("\\victim\n");
    chmod(host.dir.path(), 0o777);
    assert_unsafe(host.read(), "writable by others (mode 0777)");
    // Sticky, with the home the user's or root's: nobody else may move it.
    chmod(host.dir.path(), 0o1777);
    assert_targets(host.read(), &[Target::User("victim".to_owned())]);
}

#[test]
fn a_directory_above_the_home_reached_by_a_symlink_is_judged_where_it_leads() {
    let host = Host::new();
    host.write_forward("\\victim\n");
    // HOME is DIR/link/home, with DIR/link -> DIR/bad/real: DIR/bad is
    // above the real home but named nowhere in its path.
    let bad = host.dir.path().join("bad");
    let real = bad.join("real");
    std::fs::create_dir_all(&real).unwrap();
    chmod(&bad, 0o755);
    chmod(&real, 0o755);
    std::fs::rename(&host.home, real.join("home")).unwrap();
    let link = host.dir.path().join("link");
    symlink(&real, &link).unwrap();
    let user = User {
        home: link.join("home"),
        ..host.user()
    };
    assert_targets(read_forward(&user), &[Target::User("victim".to_owned())]);
    chmod(&bad, 0o777);
    assert_unsafe(read_forward(&user), "2 level(s) above it");
}

#[test]
fn a_symlink_to_the_home_in_a_directory_others_can_write_is_unsafe() {
    let host = Host::new();
    host.write_forward("\\victim\n");
    // HOME is DIR/open/link, a link anybody could replace, to DIR/home.
    let open = host.dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    chmod(&open, 0o755);
    symlink(&host.home, open.join("link")).unwrap();
    let user = User {
        home: open.join("link"),
        ..host.user()
    };
    assert_targets(read_forward(&user), &[Target::User("victim".to_owned())]);
    chmod(&open, 0o777);
    assert_unsafe(read_forward(&user), "open above it is writable by others");
}

#[test]
fn a_fifo_forward_is_unsafe_at_once() {
    let host = Host::new();
    nix::unistd::mkfifo(
        &host.forward(),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    chown(&host.forward(), victim());
    assert_unsafe(host.read(), "is a FIFO, not a regular file");
    // Swapped in after the lstat said "regular file": O_NONBLOCK opens it
    // at once (a blocking open would wait here for a writer forever).
    let regular = host.home.join("regular");
    host.write(&regular, b"x\n", 0o644, victim());
    let dir = safety::open_dir(&host.home).unwrap();
    let expected = safety::lstat_entry(&dir, "regular", "regular").unwrap();
    match safety::open_entry(&dir, ".forward", &expected, false, "fifo") {
        Err(Refusal::Unsafe(why)) => assert!(why.contains("is a FIFO"), "{why}"),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("a FIFO was opened"),
    }
}

#[test]
fn a_forward_replaced_while_it_is_opened_is_unsafe() {
    let host = Host::new();
    host.write_forward("\\victim\n");
    let other = host.home.join("other");
    host.write(&other, b"|/bin/evil\n", 0o644, victim());
    let dir = safety::open_dir(&host.home).unwrap();
    let expected = safety::lstat_entry(&dir, "other", "other").unwrap();
    match safety::open_entry(&dir, ".forward", &expected, false, "f") {
        Err(Refusal::Unsafe(why)) => assert!(why.contains("was replaced"), "{why}"),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("another file than the one looked at was opened"),
    }
}

#[test]
fn a_directory_or_a_device_forward_is_unsafe() {
    let host = Host::new();
    std::fs::create_dir(host.forward()).unwrap();
    chown(&host.forward(), victim());
    assert_unsafe(host.read(), "is a directory, not a regular file");
    std::fs::remove_dir(host.forward()).unwrap();
    if is_root() {
        let dev = nix::sys::stat::makedev(1, 3); // /dev/null
        if let Err(e) = nix::sys::stat::mknod(
            &host.forward(),
            nix::sys::stat::SFlag::S_IFCHR,
            // Mode 000: the user may not open it, so only the look
            // before opening can say what it is.
            nix::sys::stat::Mode::empty(),
            dev,
        ) {
            println!("SKIP a_directory_or_a_device_forward_is_unsafe (device): mknod: {e}");
            return;
        }
        chown(&host.forward(), victim());
        assert_unsafe(host.read(), "is a character device");
    } else {
        println!("SKIP a_directory_or_a_device_forward_is_unsafe (device): not root");
    }
}

#[test]
fn a_forward_over_the_size_cap_is_unsafe() {
    let host = Host::new();
    let line = "abcdefghijklmno\n"; // 16 bytes
    let cap = usize::try_from(MAX_FORWARD_SIZE).unwrap();
    let full = line.repeat(cap / line.len());
    assert_eq!(full.len(), cap);
    host.write_forward(&full);
    match host.read() {
        ForwardFile::Targets { targets, .. } => assert_eq!(targets.len(), cap / line.len()),
        other => panic!("{other:?}"),
    }
    host.write_forward(&format!("{full}x"));
    assert_unsafe(host.read(), "larger than 65536 bytes");
}

#[test]
fn a_forward_the_user_cannot_read_is_unsafe() {
    let host = Host::new();
    host.write_forward("\\victim\n");
    chmod(&host.forward(), 0o000);
    assert_unsafe(host.read(), "Permission denied");
}

#[test]
fn root_reads_the_forward_with_the_users_identity() {
    if skip_unless_root("root_reads_the_forward_with_the_users_identity") {
        return;
    }
    // Root's file, mode 600: root could read it, the user cannot.
    let host = Host::new();
    host.write(&host.forward(), b"\\victim\n", 0o600, (0, 0));
    assert_unsafe(host.read(), "Permission denied");
    // A home only root may enter.
    chmod(&host.forward(), 0o644);
    chown(&host.home, (0, 0));
    chmod(&host.home, 0o700);
    assert_unsafe(host.read(), "Permission denied");
}

#[test]
fn lines_that_are_not_utf8_are_skipped_and_bad_entries_warned() {
    let host = Host::new();
    let text = b"# Weiterleitung f\xfcr J\xfcrgen\n\"|/usr/bin/prog \xff\"\n\\victim, jon doe\n";
    host.write(&host.forward(), text, 0o644, victim());
    let shown = host.forward().display().to_string();
    match host.read() {
        ForwardFile::Targets { targets, warnings } => {
            assert_eq!(targets, [Target::User("victim".to_owned())]);
            assert_eq!(warnings.len(), 2, "{warnings:?}");
            assert!(warnings[0].starts_with(&format!("{shown}:2: not valid UTF-8")));
            assert!(warnings[1].starts_with(&format!("{shown}:3: invalid target")));
        }
        other => panic!("{other:?}"),
    }
    host.write_forward("jon doe\n\"|\"\n");
    assert_unsafe(host.read(), "no usable entries");
}

// --- :include: files -------------------------------------------------------

/// A list directory of the owner's (0755) in the host's directory.
fn list_dir(host: &Host, owner: (u32, u32)) -> PathBuf {
    let dir = host.dir.path().join("lists");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o755);
    chown(&dir, owner);
    dir
}

#[track_caller]
fn assert_include_unsafe(got: IncludeFile, what: &str) {
    match got {
        IncludeFile::Unsafe(why) => assert!(why.contains(what), "{why:?} should say {what:?}"),
        other => panic!("{other:?} should be Unsafe: {what}"),
    }
}

#[test]
fn an_include_file_gives_its_targets_and_owner() {
    let host = Host::new();
    let owner = victim();
    let list = list_dir(&host, owner).join("staff");
    host.write(&list, b"jon\n\"|/usr/bin/archive a, b\"\n", 0o644, owner);
    match read_include(&list, owner) {
        IncludeFile::Targets {
            targets,
            warnings,
            owner_uid,
            owner_gid,
        } => {
            assert_eq!(targets, [local("jon"), cmd("/usr/bin/archive a, b")]);
            assert!(warnings.is_empty(), "{warnings:?}");
            assert_eq!((owner_uid, owner_gid), owner);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_empty_include_file_is_an_empty_list() {
    let host = Host::new();
    let list = list_dir(&host, victim()).join("empty");
    host.write(&list, b"# nobody yet\n", 0o644, victim());
    match read_include(&list, victim()) {
        IncludeFile::Targets { targets, .. } => assert!(targets.is_empty()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unsafe_include_files_are_refused() {
    let host = Host::new();
    let owner = victim();
    let dir = list_dir(&host, owner);
    let list = dir.join("staff");
    host.write(&list, b"jon\n", 0o644, owner);
    assert_include_unsafe(read_include(Path::new("lists/staff"), owner), "absolute");
    assert_include_unsafe(read_include(&dir.join("missing"), owner), "No such file");
    chmod(&list, 0o664);
    assert_include_unsafe(read_include(&list, owner), "group-writable");
    chmod(&list, 0o644);
    let link = dir.join("link");
    symlink(&list, &link).unwrap();
    chown(&link, owner);
    assert_include_unsafe(read_include(&link, owner), "symbolic link");
    std::fs::hard_link(&list, dir.join("hard")).unwrap();
    assert_include_unsafe(read_include(&list, owner), "has 2 links");
    std::fs::remove_file(dir.join("hard")).unwrap();
    chmod(&dir, 0o775);
    assert_include_unsafe(
        read_include(&list, owner),
        "the directory is writable by others",
    );
    chmod(&dir, 0o1777);
    assert_include_unsafe(
        read_include(&list, owner),
        "the directory is writable by others",
    );
    chmod(&dir, 0o755);
    nix::unistd::mkfifo(
        &dir.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    chown(&dir.join("fifo"), owner);
    assert_include_unsafe(read_include(&dir.join("fifo"), owner), "is a FIFO");
    let big = vec![b'a'; usize::try_from(MAX_INCLUDE_SIZE).unwrap() + 1];
    host.write(&dir.join("big"), &big, 0o644, owner);
    assert_include_unsafe(read_include(&dir.join("big"), owner), "larger than");
    // After all that, the list itself is still fine.
    assert!(matches!(
        read_include(&list, owner),
        IncludeFile::Targets { .. }
    ));
}

#[test]
fn an_include_file_in_someone_elses_directory_is_unsafe() {
    if skip_unless_root("an_include_file_in_someone_elses_directory_is_unsafe") {
        return;
    }
    let host = Host::new();
    let dir = list_dir(&host, intruder());
    let list = dir.join("staff");
    host.write(&list, b"jon\n", 0o644, victim());
    assert_include_unsafe(
        read_include(&list, victim()),
        &format!("owned by uid {}", intruder().0),
    );
    // Root's directory holds anybody's lists.
    chown(&dir, (0, 0));
    assert!(matches!(
        read_include(&list, victim()),
        IncludeFile::Targets {
            owner_uid: 65534,
            ..
        }
    ));
}

#[test]
fn an_include_file_is_read_with_the_readers_identity() {
    if skip_unless_root("an_include_file_is_read_with_the_readers_identity") {
        return;
    }
    let host = Host::new();
    let dir = list_dir(&host, (0, 0));
    let list = dir.join("secret");
    host.write(&list, b"jon\n", 0o600, intruder());
    assert_include_unsafe(read_include(&list, victim()), "Permission denied");
    assert!(matches!(
        read_include(&list, intruder()),
        IncludeFile::Targets { .. }
    ));
}
