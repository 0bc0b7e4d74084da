use super::*;

#[test]
fn status_fields_are_read_by_key() {
    let status = "Name:\tx\nCapInh:\t0000000000000000\nCapBnd:\t000001fffdffffff\n\
                  NSpid:\t4242\t17\t1\nSeccomp:\t2\nSeccomp_filters:\t1\nNoNewPrivs:\t1\n";
    assert_eq!(capbnd(status), Some(0x1ff_fdff_ffff));
    assert_eq!(capbnd("Name:\tx\n"), None);
    assert_eq!(nspid(status), vec![4242, 17, 1]);
    assert_eq!(nspid("Name:\tx\n"), Vec::<i32>::new());
    // `Seccomp_filters` is another key, not a longer `Seccomp`.
    assert_eq!(field(status, "Seccomp"), Some("2"));
    assert_eq!(seccomp(status), Some(true));
    assert_eq!(seccomp("Seccomp:\t0\n"), Some(false));
    assert_eq!(seccomp("Name:\tx\n"), None);
    assert_eq!(field(status, "NoNewPrivs"), Some("1"));
}

#[test]
fn our_own_status_is_read() {
    let me = std::process::id() as i32;
    let s = status(me).unwrap();
    assert!(capbnd(&s).is_some());
    assert_eq!(nspid_of(me).first(), Some(&me));
    assert!(nspid_of(i32::MAX).is_empty());
}

#[test]
fn stat_fields_are_counted_after_the_last_paren() {
    let line = "42 (a) b) (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 1";
    let want = Stat {
        state: "S",
        flags: 4194560,
        start: 98765,
    };
    assert_eq!(parse_stat(line), Some(want));
    assert!(!want.exited());
    let zombie = line.replace(") S ", ") Z ");
    assert!(parse_stat(&zombie).unwrap().exited());
    let exiting = line.replace(" 4194560 ", " 4194564 ");
    assert_eq!(parse_stat(&exiting).unwrap().flags & PF_EXITING, PF_EXITING);
    assert!(parse_stat(&exiting).unwrap().exited());
    assert_eq!(parse_stat("42 (x) S 1"), None);
    assert!(parse_stat_io("42 (x) S 1").is_err());
}

#[test]
fn a_file_is_read_whole_shorter_or_longer_than_a_page() {
    let d = std::env::temp_dir().join(format!("subhost-test-procread-{}", std::process::id()));
    for len in [0, 10, 4095, 4096, 4097, 10_000] {
        let text: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        std::fs::write(&d, &text).unwrap();
        assert_eq!(read(&d).unwrap(), text, "{len} bytes");
    }
    let _ = std::fs::remove_file(&d);
    let me = std::process::id();
    assert!(read(std::path::Path::new(&format!("/proc/{me}/status")))
        .unwrap()
        .contains(&format!("\nPid:\t{me}\n")));
    assert!(read(std::path::Path::new("/proc/no-such-process/status")).is_err());
}
