use std::net::SocketAddr;

use super::*;

#[cfg(target_endian = "little")]
#[test]
fn proc_net_addresses_are_host_order_words() {
    assert_eq!(
        parse_local("0100007F:1F90"),
        Some("127.0.0.1:8080".parse().unwrap())
    );
    assert_eq!(
        parse_local("00000000000000000000000001000000:0035"),
        Some("[::1]:53".parse().unwrap())
    );
    assert_eq!(
        parse_local("0000000000000000FFFF00000100007F:0050"),
        Some("[::ffff:127.0.0.1]:80".parse().unwrap())
    );
    assert_eq!(parse_local("0100007F"), None);
    assert_eq!(parse_local("01007F:0050"), None);
}

#[test]
fn a_wildcard_or_the_same_address_on_the_same_port_conflicts() {
    let a = |s: &str| -> SocketAddr { s.parse().unwrap() };
    assert!(conflicts(a("127.0.0.1:80"), a("127.0.0.1:80")));
    assert!(conflicts(a("0.0.0.0:80"), a("127.0.0.1:80")));
    assert!(conflicts(a("[::]:80"), a("127.0.0.1:80")));
    assert!(conflicts(a("[::ffff:127.0.0.1]:80"), a("127.0.0.1:80")));
    assert!(conflicts(a("127.0.0.1:80"), a("0.0.0.0:80")));
    assert!(!conflicts(a("127.0.0.1:81"), a("127.0.0.1:80")));
    assert!(!conflicts(a("127.0.0.2:80"), a("127.0.0.1:80")));
    assert!(!conflicts(a("[::1]:80"), a("127.0.0.1:80")));
}

#[cfg(target_endian = "little")]
#[test]
fn only_listening_tcp_sockets_hold_a_port() {
    let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
       0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 317 1 0 100 0 0 10 0\n\
       1: 0100007F:1F90 0100007F:A000 01 00000000:00000000 00:00000000 00000000     0        0 318 1 0 20 4 1 32 -1\n\
       2: 00000000:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 319 1 0 100 0 0 10 0\n";
    let want: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    assert_eq!(inodes(table, Proto::Tcp, want), [317]);
    // UDP sockets hold their port in any state.
    assert_eq!(inodes(table, Proto::Udp, want), [317, 318]);
    assert_eq!(
        inodes(table, Proto::Tcp, "127.0.0.1:8081".parse().unwrap()),
        [319]
    );
}
