//! CPU time and memory of process trees, from /proc (as bench/tracking/loadgen does).

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Args, Res};

/// `root` and all its descendants.
pub fn tree(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // Fields after the last ')' (the command name may contain spaces): state, ppid, …
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(c) = children.get(&out[i]) {
            out.extend(c.iter().copied());
        }
        i += 1;
    }
    out
}

fn kb_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l[name.len()..].split_whitespace().next())
        .and_then(|s| s.parse().ok())
}

#[derive(Default, Clone, Copy)]
pub struct Mem {
    pub rss_kb: u64,
    pub hwm_kb: u64,
    pub procs: u64,
}

/// VmRSS summed over `pids`, and VmHWM (each process's own peak) summed too.
pub fn mem_of(pids: &[u32]) -> Mem {
    let mut m = Mem::default();
    for pid in pids {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let rss = kb_field(&status, "VmRSS:").unwrap_or(0);
        if rss == 0 {
            continue; // a zombie or a kernel thread
        }
        m.procs += 1;
        m.rss_kb += rss;
        m.hwm_kb += kb_field(&status, "VmHWM:").unwrap_or(0);
    }
    m
}

/// utime + stime of one process (`pid` or "self"), in seconds (USER_HZ is 100 on Linux).
pub fn cpu_s(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    // After the command name: state(3) ppid … utime(14) stime(15), i.e. indexes 11 and 12 here.
    (tick(11) + tick(12)) as f64 / 100.0
}

/// CPU seconds used so far by the live processes of a tree.
pub fn tree_cpu_s(pids: &[u32]) -> f64 {
    pids.iter().map(|p| cpu_s(&p.to_string())).sum()
}

/// The whole machine's busy and total jiffies (user+nice+system+irq+softirq+steal; all).
pub fn machine_jiffies() -> (u64, u64) {
    let Ok(s) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let Some(line) = s.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let g = |i: usize| v.get(i).copied().unwrap_or(0);
    let busy = g(0) + g(1) + g(2) + g(5) + g(6) + g(7);
    (busy, v.iter().take(8).sum())
}

fn pid_arg(a: &Args) -> Res<u32> {
    a.str("pid")?
        .parse()
        .map_err(|_| "--pid: not a pid".to_string())
}

pub fn rss(a: &Args) -> Res<Value> {
    let pid = pid_arg(a)?;
    let m = mem_of(&tree(pid));
    Ok(json!({"rss_kb": m.rss_kb, "hwm_kb": m.hwm_kb, "procs": m.procs}))
}

/// Waits until the tree uses under 5% of a core over two consecutive half-second windows.
pub fn settle(a: &Args) -> Res<Value> {
    let pid = pid_arg(a)?;
    let max = Duration::from_secs(a.u64_or("max-s", 60)?);
    let t0 = Instant::now();
    let mut quiet = 0;
    let mut last = tree_cpu_s(&tree(pid));
    while t0.elapsed() < max {
        thread::sleep(Duration::from_millis(500));
        let now = tree_cpu_s(&tree(pid));
        // Processes that exited drop out of the sum, so a negative delta counts as busy.
        let used = now - last;
        last = now;
        quiet = if (0.0..0.025).contains(&used) { quiet + 1 } else { 0 };
        if quiet >= 2 {
            return Ok(json!({"settled": true, "settle_s": crate::since_s(t0)}));
        }
    }
    Ok(json!({"settled": false, "settle_s": crate::since_s(t0)}))
}
