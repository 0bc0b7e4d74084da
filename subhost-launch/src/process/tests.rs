use std::io::{Read, Write};

use nix::sys::wait::{waitpid, WaitStatus};

use super::*;

/// The test harness runs tests on threads: every child below makes only
/// async-signal-safe calls (the channel's included) before it leaves.
fn exit_code(pid: Pid) -> i32 {
    match waitpid(pid, None).unwrap() {
        WaitStatus::Exited(_, code) => code,
        other => panic!("child: {other:?}"),
    }
}

#[test]
fn every_kind_of_message_arrives_whole_and_in_order() {
    let (a, b) = channel().unwrap();
    a.send(&Message::Pid(4242)).unwrap();
    a.send(&Message::Go).unwrap();
    a.send(&Message::Errno(libc::EPERM)).unwrap();
    a.send(&Message::Failed("cannot mount /proc: EPERM".into()))
        .unwrap();
    drop(a);
    assert!(matches!(b.recv().unwrap(), Some(Message::Pid(4242))));
    assert!(matches!(b.recv().unwrap(), Some(Message::Go)));
    assert!(matches!(
        b.recv().unwrap(),
        Some(Message::Errno(libc::EPERM))
    ));
    match b.recv().unwrap() {
        Some(Message::Failed(t)) => assert_eq!(t, "cannot mount /proc: EPERM"),
        other => panic!("{other:?}"),
    }
    // The other end is gone: the end of the stream, not an error.
    assert!(b.recv().unwrap().is_none());
}

#[test]
fn a_long_error_is_cut_on_a_character_boundary() {
    let (a, b) = channel().unwrap();
    let text = "é".repeat(MAX_PACKET);
    a.send(&Message::Failed(text)).unwrap();
    match b.recv().unwrap() {
        Some(Message::Failed(t)) => {
            assert!(
                t.len() < MAX_PACKET && t.len() > MAX_PACKET - 4,
                "{}",
                t.len()
            );
            assert!(t.chars().all(|c| c == 'é'));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_fd_passes_and_stays_usable() {
    let (a, b) = channel().unwrap();
    let (r, w) = nix::unistd::pipe().unwrap();
    a.send_fd(w.as_fd()).unwrap();
    drop(w);
    let Some(Message::Fd(got)) = b.recv().unwrap() else {
        panic!("no fd");
    };
    std::fs::File::from(got).write_all(b"through").unwrap();
    let mut text = String::new();
    std::fs::File::from(r).read_to_string(&mut text).unwrap();
    assert_eq!(text, "through");
}

#[test]
fn garbage_is_an_error_not_a_message() {
    let (a, b) = channel().unwrap();
    nix::sys::socket::send(
        a.as_fd().as_raw_fd(),
        b"Zx",
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    nix::sys::socket::send(
        a.as_fd().as_raw_fd(),
        b"P12",
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    assert!(b.recv().is_err());
    assert!(b.recv().is_err());
}

#[test]
fn an_exec_closes_the_childs_end() {
    let (ours, theirs) = channel().unwrap();
    let prog = c"/bin/sleep";
    let argv = [prog.as_ptr(), c"10".as_ptr(), std::ptr::null()];
    // SAFETY: the child only execs (or exits), both async-signal-safe.
    let pid = unsafe {
        worker(|| {
            let _keep = &theirs;
            libc::execv(prog.as_ptr(), argv.as_ptr());
            126
        })
    }
    .unwrap();
    drop(theirs);
    // The exec closed the child's copy, close-on-exec: the end of the
    // stream while the program still runs, though the child sent nothing.
    let mut fds = [nix::poll::PollFd::new(
        ours.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let ready = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(5000u16)).unwrap();
    let ended = ready == 1 && ours.recv().unwrap().is_none();
    sys::kill_and_reap(pid.as_raw());
    assert!(ended, "the channel stayed open across the exec");
}

#[test]
fn a_sibling_is_the_callers_parents_child() {
    let (ours, theirs) = channel().unwrap();
    // SAFETY: the middle child only clones, sends a PID and exits; the
    // sibling only exits.
    let middle = unsafe {
        worker(|| match sibling() {
            Ok(ForkResult::Child) => sys::exit_now(7),
            Ok(ForkResult::Parent { child }) => {
                let _ = theirs.send(&Message::Pid(child.as_raw()));
                0
            }
            Err(_) => 1,
        })
    }
    .unwrap();
    drop(theirs);
    assert_eq!(exit_code(middle), 0);
    let Some(Message::Pid(pid)) = ours.recv().unwrap() else {
        panic!("no PID");
    };
    // Reapable here only because it is this process's child.
    assert_eq!(exit_code(Pid::from_raw(pid)), 7);
}

#[test]
fn a_pty_master_passes_to_another_process() {
    use crate::tty::test_support::{fork_with, read_until, serial, LIMIT};
    let _serial = serial();
    let (ours, theirs) = channel().unwrap();
    let mut child = fork_with(move || {
        let Ok(pty) = crate::tty::open_pty(std::path::Path::new("/dev/ptmx")) else {
            return 2;
        };
        if theirs.send_fd(pty.master.as_fd()).is_err() {
            return 3;
        }
        drop(pty.master);
        // Arrives only through the passed master: the child's own copy is
        // closed.
        if nix::unistd::write(&pty.slave, b"from-the-child\n").is_err() {
            return 4;
        }
        0
    });
    let Some(Message::Fd(master)) = ours.recv().unwrap() else {
        panic!("no fd");
    };
    // SAFETY: F_GETFD on an fd we own.
    let flags = unsafe { libc::fcntl(master.as_raw_fd(), libc::F_GETFD) };
    assert!(
        flags & libc::FD_CLOEXEC != 0,
        "received fd must be close-on-exec"
    );
    assert!(crate::tty::is_tty(master.as_fd()));
    read_until(master.as_fd(), "from-the-child", LIMIT);
    assert_eq!(child.code(LIMIT), 0);
}
