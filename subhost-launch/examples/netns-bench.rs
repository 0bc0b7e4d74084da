//! Times `netns::create` and `netns::delete` for N subhosts with one cable
//! each on an existing bridge, and reports this process's peak RSS.
//!
//! Usage (root): `netns-bench BRIDGE [N]`. Names are `shtbn<pid>-<i>`-like
//! and every namespace made is deleted before exit.

#[allow(dead_code, unused_imports)]
#[path = "../src/netns/mod.rs"]
mod netns;

// netns logs its steps through it.
#[allow(dead_code)]
#[path = "../src/logging.rs"]
mod logging;

use std::time::{Duration, Instant};

fn peak_rss_kib() -> i64 {
    // SAFETY: getrusage only writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage, RUSAGE_SELF is always valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_maxrss
}

fn summary(label: &str, mut v: Vec<Duration>) {
    v.sort();
    let total: Duration = v.iter().sum();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{label}: n={} median {:.2} ms, mean {:.2} ms, min {:.2} ms, max {:.2} ms, total {:.1} ms",
        v.len(),
        ms(v[v.len() / 2]),
        ms(total) / v.len() as f64,
        ms(v[0]),
        ms(v[v.len() - 1]),
        ms(total)
    );
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let bridge = args.get(1).expect("usage: netns-bench BRIDGE [N]").clone();
    let n: usize = args.get(2).map_or(Ok(50), |s| s.parse())?;
    println!("peak RSS before: {} KiB", peak_rss_kib());
    let tag = std::process::id() % 0x1000;
    let names: Vec<String> = (0..n).map(|i| format!("shtbn{tag:x}x{i}")).collect();

    let mut create_times = Vec::new();
    let mut made = Vec::new();
    let mut failure = None;
    for name in &names {
        let links = [netns::Link {
            host_if: format!("{name}0"),
            inner_if: "eth0".into(),
            bridge: Some(bridge.clone()),
            mac: Some([2, 0, 0, 0xbe, (made.len() >> 8) as u8, made.len() as u8]),
        }];
        let t = Instant::now();
        if let Err(e) = netns::create(name, &links) {
            failure = Some(e);
            break;
        }
        create_times.push(t.elapsed());
        made.push(name.clone());
    }
    println!("peak RSS after create: {} KiB", peak_rss_kib());

    let mut delete_times = Vec::new();
    let start = Instant::now();
    for name in &made {
        let t = Instant::now();
        netns::delete(name, Duration::from_secs(5))?;
        delete_times.push(t.elapsed());
    }
    let delete_total = start.elapsed();
    if let Some(e) = failure {
        return Err(e.context("create failed"));
    }
    summary("create (1 cable)", create_times);
    summary("delete (1 cable, until host link gone)", delete_times);
    println!("delete all: {:.1} ms", delete_total.as_secs_f64() * 1e3);
    println!("peak RSS: {} KiB", peak_rss_kib());
    Ok(())
}
