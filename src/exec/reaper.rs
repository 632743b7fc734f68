//! The reaper: one process per worker process that kills the process groups of the commands
//! still running when the worker dies, however it dies (SIGKILL included).
//!
//! `PR_SET_PDEATHSIG` reaches only a command's own `sh`; what the command started runs on.
//! So the first command a process runs forks a reaper, which holds one end of a socket pair
//! whose other end only the worker holds. Each command's process registers its group on the
//! socket before it executes (`+pgid`), the worker registers it again once the command has
//! started, and unregisters it once the group is killed (`-pgid`). When the worker dies, the
//! kernel closes its end; the reaper reads the end of the stream, kills every group still
//! registered and exits. The reaper sits in a session of its own, ignoring the terminal's
//! and GNU timeout's signals, so that only the end of the worker ends it.
//!
//! Two things could still end the reaper first, and both are covered:
//! - A kill by name (`pkill -9 -f 'jobq worker'`) must not take it with the worker: it is
//!   named `jobq-reaper` (its `comm`) and its command line is rewritten to
//!   `jobq-reaper <worker pid>`, so that nothing that matches the worker matches it.
//! - A reaper that dies alone (killed by pid, out of memory) is noticed at once: a thread
//!   of the worker waits on the socket, which ends when the reaper does, starts another
//!   reaper on a new socket placed on the same descriptor number (so a command forked
//!   meanwhile writes to one or the other, never to a closed number), and registers again
//!   every group still running.
//!
//! What no process of ours can cover is a SIGKILL of the worker and the reaper in the same
//! instant: the commands' `sh` still die (`PR_SET_PDEATHSIG`), what they started does not.
//! A command that leaves its group (`setsid`) escapes it too.

use std::sync::{Mutex, Once, OnceLock, PoisonError};
use std::time::Duration;

/// The most groups the reaper keeps at once; later ones rely on `PR_SET_PDEATHSIG` alone.
const MAX_GROUPS: usize = 8192;

/// The reaper's name, as `ps`, `top` and `pkill` see it.
const NAME: &[u8] = b"jobq-reaper";

/// The worker's side of the reaper.
struct Reaper {
    /// The descriptor the worker writes records to: the same number for every reaper.
    fd: libc::c_int,
    /// The first reaper's pid.
    pid: libc::pid_t,
    /// Where the command line lies, for each new reaper to write its name over.
    area: Option<(usize, usize)>,
    /// The groups registered and not yet forgotten, to register again with a new reaper.
    groups: Mutex<Vec<libc::pid_t>>,
}

static REAPER: OnceLock<Option<Reaper>> = OnceLock::new();

/// The reaper, started on first use, with the thread that replaces it when it ends.
fn reaper() -> Option<&'static Reaper> {
    static WATCH: Once = Once::new();
    let reaper = REAPER.get_or_init(start).as_ref()?;
    WATCH.call_once(|| {
        let started = std::thread::Builder::new()
            .name("jobq-reaper-watch".into())
            .spawn(move || watch(reaper));
        if let Err(e) = started {
            tracing::warn!(error = %e, "jobq: nothing watches the reaper; a reaper that dies is not replaced");
        }
    });
    Some(reaper)
}

/// The descriptor to register a group on, starting the reaper on first use. Its number
/// never changes, so a command's process may write to it between fork and exec.
pub(super) fn socket() -> Option<libc::c_int> {
    reaper().map(|r| r.fd)
}

/// Writes one record: `pgid` to register a group, `-pgid` to forget it. Async-signal safe:
/// called between fork and exec. A reaper that is gone makes it fail quietly (no SIGPIPE);
/// the worker registers the group again with the next one.
pub(super) fn send(fd: libc::c_int, record: libc::pid_t) {
    let bytes = record.to_ne_bytes();
    // SAFETY: sends 4 bytes from a live local buffer; a SOCK_SEQPACKET socket keeps each
    // record a message of its own.
    unsafe {
        libc::send(fd, bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL);
    }
}

/// Registers a started command's group (again: its process did before it ran).
pub(super) fn register(pgid: libc::pid_t) {
    if let Some(r) = reaper() {
        let mut groups = r.groups.lock().unwrap_or_else(PoisonError::into_inner);
        groups.push(pgid);
        send(r.fd, pgid);
    }
}

/// Forgets a group that was killed whole.
pub(super) fn forget(pgid: libc::pid_t) {
    if let Some(r) = reaper() {
        let mut groups = r.groups.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = groups.iter().position(|g| *g == pgid) {
            groups.swap_remove(i);
        }
        send(r.fd, -pgid);
    }
}

/// Where the kernel shows this process's command line (`arg_start`, `arg_end` of
/// `/proc/self/stat`), for the reaper to write its own name over it.
fn command_line_area() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name (which may hold spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let start: usize = fields.get(48 - 3)?.parse().ok()?;
    let end: usize = fields.get(49 - 3)?.parse().ok()?;
    (start != 0 && end > start).then_some((start, end))
}

fn start() -> Option<Reaper> {
    let area = command_line_area();
    let Some((fd, pid)) = spawn(area) else {
        tracing::warn!(error = %std::io::Error::last_os_error(), "jobq: no reaper for exec commands; they die with the worker only through PR_SET_PDEATHSIG");
        return None;
    };
    Some(Reaper {
        fd,
        pid,
        area,
        groups: Mutex::new(Vec::new()),
    })
}

/// Waits for the reaper to end, then starts another in its place, for the life of the
/// process.
fn watch(reaper: &Reaper) {
    let fd = reaper.fd;
    let mut pid = reaper.pid;
    loop {
        wait_for_end(fd);
        // SAFETY: reaps the reaper that ended (it is our child); WNOHANG never blocks.
        unsafe {
            libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG);
        }
        // Holding the groups: a command registered meanwhile is either sent again below or
        // registers itself on the new socket after.
        let groups = reaper.groups.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let Some((new_fd, new_pid)) = spawn(reaper.area) else {
                tracing::warn!(error = %std::io::Error::last_os_error(), "jobq: could not start a new reaper");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            };
            // SAFETY: both are descriptors we own; dup3 replaces `fd` atomically, so a
            // command forked meanwhile holds the old socket or the new one.
            let moved = unsafe { libc::dup3(new_fd, fd, libc::O_CLOEXEC) };
            let error = std::io::Error::last_os_error();
            // SAFETY: closing our copy of the descriptor just duplicated (or, when dup3
            // failed, the new reaper's only link: it sees its end and exits).
            unsafe { libc::close(new_fd) };
            if moved < 0 {
                tracing::warn!(%error, "jobq: could not start a new reaper");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
            tracing::warn!(
                old = pid,
                new = new_pid,
                groups = groups.len(),
                "jobq: the reaper process ended; another took its place"
            );
            pid = new_pid;
            break;
        }
        for pgid in groups.iter() {
            send(fd, *pgid);
        }
    }
}

/// Blocks until the reaper at the other end of `fd` has gone (its end of the stream).
fn wait_for_end(fd: libc::c_int) {
    loop {
        let mut poll = libc::pollfd {
            fd,
            events: libc::POLLIN | libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd; -1 waits without a timeout.
        let n = unsafe { libc::poll(&mut poll, 1, -1) };
        if n > 0 && poll.revents & (libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR) != 0 {
            return;
        }
        if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            std::thread::sleep(Duration::from_millis(100));
        }
        if n > 0 && poll.revents & libc::POLLIN != 0 {
            // The reaper never writes: data can only be the end.
            let mut byte = 0u8;
            // SAFETY: reads at most one byte into a live local.
            let read = unsafe { libc::recv(fd, (&raw mut byte).cast(), 1, libc::MSG_DONTWAIT) };
            if read == 0 {
                return;
            }
        }
    }
}

/// Starts a reaper; returns the worker's end of its socket and its pid.
fn spawn(area: Option<(usize, usize)>) -> Option<(libc::c_int, libc::pid_t)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: socketpair fills the two fds of a valid array. CLOEXEC: no command inherits
    // the worker's end, so the worker's death ends the stream.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } != 0
    {
        return None;
    }
    let [worker_end, reaper_end] = fds;
    // SAFETY: getpid has no preconditions.
    let worker = unsafe { libc::getpid() };
    // SAFETY: the child runs only async-signal-safe calls (reap) and never returns.
    match unsafe { libc::fork() } {
        -1 => {
            // SAFETY: closing the two fds we just made.
            unsafe {
                libc::close(worker_end);
                libc::close(reaper_end);
            }
            None
        }
        // SAFETY: in the forked child.
        0 => unsafe { reap(reaper_end, worker, area) },
        pid => {
            // SAFETY: the reaper's end belongs to the reaper now.
            unsafe { libc::close(reaper_end) };
            Some((worker_end, pid))
        }
    }
}

/// Writes `jobq-reaper <worker pid>` over the command line the reaper was forked with, and
/// names its thread `jobq-reaper`. Async-signal safe: no allocation.
///
/// # Safety
///
/// Only in the forked reaper: `area` is this process's command line, which nothing else
/// reads there.
unsafe fn rename(worker: libc::pid_t, area: Option<(usize, usize)>) {
    let mut name = [0u8; 16];
    name[..NAME.len()].copy_from_slice(NAME);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
    let Some((start, end)) = area else { return };
    let mut line = [0u8; 32];
    line[..NAME.len()].copy_from_slice(NAME);
    line[NAME.len()] = b' ';
    let mut len = NAME.len() + 1;
    let mut digits = [0u8; 12];
    let mut n = worker.unsigned_abs();
    let mut d = digits.len();
    loop {
        d -= 1;
        digits[d] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    line[len..len + digits.len() - d].copy_from_slice(&digits[d..]);
    len += digits.len() - d;
    let room = end - start;
    // SAFETY: [start, end) is this process's own argument area on its stack (from
    // /proc/self/stat), writable; we write within it and leave its last byte NUL.
    unsafe {
        let area = start as *mut u8;
        std::ptr::write_bytes(area, 0, room);
        std::ptr::copy_nonoverlapping(line.as_ptr(), area, len.min(room - 1));
    }
}

/// The reaper's whole life, in the forked child of a possibly multithreaded process: only
/// async-signal-safe calls, no allocation, no panics.
unsafe fn reap(socket: libc::c_int, worker: libc::pid_t, area: Option<(usize, usize)>) -> ! {
    // SAFETY: all of the calls below are async-signal-safe and take valid arguments.
    unsafe {
        libc::setsid();
        rename(worker, area);
        for signal in [
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGPIPE,
            libc::SIGTSTP,
        ] {
            libc::signal(signal, libc::SIG_IGN);
        }
        // Keep the socket alone: the worker's files and sockets must not outlive it here.
        if libc::dup2(socket, 0) != 0 {
            libc::_exit(1);
        }
        if libc::syscall(libc::SYS_close_range, 1u32, u32::MAX, 0u32) != 0 {
            for fd in 1..65_536 {
                libc::close(fd);
            }
        }
        let mut groups = [0 as libc::pid_t; MAX_GROUPS];
        let mut count = 0;
        let mut record = [0u8; 4];
        loop {
            let n = libc::read(0, record.as_mut_ptr().cast(), record.len());
            if n == 0 {
                break;
            }
            if n < 0 {
                if *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                break;
            }
            if n != 4 {
                continue;
            }
            let pgid = libc::pid_t::from_ne_bytes(record);
            if pgid > 0 {
                if count < MAX_GROUPS && !groups[..count].contains(&pgid) {
                    groups[count] = pgid;
                    count += 1;
                }
            } else if let Some(i) = groups[..count].iter().position(|g| *g == -pgid) {
                count -= 1;
                groups[i] = groups[count];
            }
        }
        for pgid in &groups[..count] {
            libc::kill(-*pgid, libc::SIGKILL);
        }
        libc::_exit(0)
    }
}
