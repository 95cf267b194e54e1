//! The child of a delivery to a program, between fork and exec, and the
//! descriptor that tells of its exit: the `unsafe` part of
//! `deliver/program.rs`, kept apart from the rest of [`crate::sys`] (and,
//! like it, the only place where `unsafe` is allowed).

use std::ffi::CString;

/// Who the child of [`confine_child`] becomes: every value computed by
/// the parent (the groups from getgrouplist(3), which may ask NSS), since
/// the child of a threaded process may call only async-signal-safe
/// functions before exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildIdentity {
    pub uid: u32,
    pub gid: u32,
    /// The supplementary groups, `gid` among them as getgrouplist(3)
    /// gives it.
    pub groups: Vec<u32>,
}

/// What [`confine_child`] does in the child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSetup {
    /// The identity to take, or `None` to keep the parent's (a postie that
    /// is not root runs programs as itself).
    pub identity: Option<ChildIdentity>,
    /// The working directory to enter, as the new identity; `/` when it
    /// cannot be entered.
    pub home: CString,
    /// One past the highest descriptor to mark close-on-exec where
    /// close_range(2) is missing (Linux before 5.11): the soft
    /// `RLIMIT_NOFILE`, at most 2^20.
    fd_limit: i32,
}

impl ChildSetup {
    pub fn new(identity: Option<ChildIdentity>, home: CString) -> ChildSetup {
        use nix::sys::resource::{Resource, getrlimit};
        let fd_limit = getrlimit(Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| soft.min(1 << 20) as i32)
            .unwrap_or(1 << 16);
        ChildSetup {
            identity,
            home,
            fd_limit,
        }
    }
}

/// Has the child of `cmd` set itself up as `setup` says, between fork and
/// exec (after std has put the pipes on descriptors 0, 1 and 2), in this
/// order:
///
/// 1. a session of its own (setsid), so that killing the process group
///    kills what it started, and no terminal reaches it;
/// 2. the identity, when one is given: setgroups, setresgid, setresuid,
///    then checked: every uid and gid as asked, and root not regained;
/// 3. the working directory: `setup.home`, else `/`;
/// 4. every signal's disposition back to the default and the signal mask
///    emptied (the delivery process ignores some and blocks others while
///    it delivers; both are inherited through exec);
/// 5. every descriptor above 2 marked close-on-exec (close_range(2) with
///    `CLOSE_RANGE_CLOEXEC`, or one fcntl per descriptor on older
///    kernels), so that exec closes them: marked, not closed, since std
///    reports a failed exec through one of them.
///
/// A step that fails makes the spawn fail with its errno, and std reaps
/// the child. Spawning then forks (no posix_spawn), and std prepares
/// argv and the environment before the fork.
pub fn confine_child(cmd: &mut std::process::Command, setup: ChildSetup) {
    use std::os::unix::process::CommandExt;
    let err = std::io::Error::last_os_error;
    let child = move || -> std::io::Result<()> {
        // SAFETY (the whole closure): it runs in the child of fork(2),
        // which may have been called by a threaded process, so it calls
        // only async-signal-safe system calls on values made before the
        // fork, and allocates nothing (an io::Error from an errno does
        // not allocate).
        unsafe {
            if libc::setsid() < 0 {
                return Err(err());
            }
            if let Some(id) = &setup.identity {
                if libc::setgroups(id.groups.len(), id.groups.as_ptr()) != 0
                    || libc::setresgid(id.gid, id.gid, id.gid) != 0
                    || libc::setresuid(id.uid, id.uid, id.uid) != 0
                {
                    return Err(err());
                }
                let (mut r, mut e, mut s) = (0, 0, 0);
                let uids = libc::getresuid(&mut r, &mut e, &mut s) == 0
                    && [r, e, s].iter().all(|&u| u == id.uid);
                let gids = libc::getresgid(&mut r, &mut e, &mut s) == 0
                    && [r, e, s].iter().all(|&g| g == id.gid);
                if !uids || !gids || (id.uid != 0 && libc::setuid(0) == 0) {
                    return Err(std::io::Error::from_raw_os_error(libc::EPERM));
                }
            }
            if libc::chdir(setup.home.as_ptr()) != 0 && libc::chdir(c"/".as_ptr()) != 0 {
                return Err(err());
            }
            // The kernel's own call, not the C library's sigaction(3),
            // which refuses the signals glibc keeps for itself (32 and 33),
            // ignored ones among them being inherited all the same. The
            // kernel's struct sigaction is at most 32 bytes; all zero is
            // SIG_DFL, no flags, an empty mask, whatever its layout.
            let dfl = [0u64; 4];
            for sig in 1..=64 {
                // SIGKILL and SIGSTOP refuse: nothing to undo there.
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    dfl.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    8usize,
                );
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            if libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) != 0 {
                return Err(err());
            }
            let flag = libc::CLOSE_RANGE_CLOEXEC as libc::c_int;
            if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, flag) != 0 {
                for fd in 3..setup.fd_limit {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
        }
        Ok(())
    };
    // SAFETY: `child` keeps to what may run between fork and exec (above).
    unsafe { cmd.pre_exec(child) };
}

/// A pidfd of process `pid` (pidfd_open(2), Linux 5.3; close-on-exec):
/// it polls readable once the process has exited, so a poll loop learns
/// of a child's exit with no signal handler and no timer. The process
/// must be an unreaped child of ours, so that its pid names no other.
pub fn pidfd_open(pid: nix::unistd::Pid) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: a system call with two integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| std::io::Error::other("pidfd out of range"))?;
    // SAFETY: the descriptor was just made for us and has no other owner.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// A signal disposition that installs no handler of ours, for tests of
/// what a child inherits.
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
pub enum SignalHandler {
    Ignore,
    Default,
    /// One in force before, returned by [`set_signal_handler`].
    Previous(nix::sys::signal::SigHandler),
}

/// Sets the process's disposition of `sig`; returns the one before, if
/// the call succeeded. Test-only: the process's signals are otherwise
/// left as std sets them.
#[cfg(test)]
pub fn set_signal_handler(
    sig: nix::sys::signal::Signal,
    handler: SignalHandler,
) -> Option<SignalHandler> {
    use nix::sys::signal::SigHandler;
    let handler = match handler {
        SignalHandler::Ignore => SigHandler::SigIgn,
        SignalHandler::Default => SigHandler::SigDfl,
        SignalHandler::Previous(h) => h,
    };
    // SAFETY: SIG_IGN and SIG_DFL run no code; a previous handler was
    // installed by whoever installed it, for this same signal.
    unsafe { nix::sys::signal::signal(sig, handler) }
        .ok()
        .map(SignalHandler::Previous)
}
