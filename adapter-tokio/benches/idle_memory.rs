//! Memory of idle connections: starts the broker in-process on 127.0.0.1, opens N idle MQTT
//! 3.1.1 connections from a child process (raw TCP sockets: CONNECT, read CONNACK, keep
//! alive 0, then nothing), and reports the broker process's resident memory (VmRSS)
//! before and after. With `mosquitto` on the PATH, the same clients measure it too.
//!
//! ```sh
//! cargo bench -p adapter-tokio --bench idle_memory -- 10000
//! cargo bench -p adapter-tokio --bench idle_memory -- 10000 --subscribe
//! ```
//!
//! With `--subscribe`, each connection also subscribes to a topic of its own (`idle/N`,
//! QoS 1) and reads its SUBACK before going quiet. With `--sizes`, it also prints the
//! broker's allocations that the connections added, by requested size.
//!
//! N defaults to 10000 and is capped at 100000 and by the open-files limit (each process
//! needs one descriptor per connection): raise it with `ulimit -n` first if needed.

use adapter_tokio::config::Config;
use adapter_tokio::server::start;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The system allocator, counting the bytes allocated and not freed: the heap the broker
/// holds, apart from what the allocator keeps around.
struct Counting;

static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Live allocations by requested size, in 8-byte steps (the last counts every larger
/// one), for `--sizes`.
const SIZE_CLASSES: usize = 513;
static BY_SIZE: [std::sync::atomic::AtomicIsize; SIZE_CLASSES] =
    [const { std::sync::atomic::AtomicIsize::new(0) }; SIZE_CLASSES];

fn size_class(size: usize) -> usize {
    size.div_ceil(8).min(SIZE_CLASSES - 1)
}

fn count(size: usize, n: isize) {
    BY_SIZE[size_class(size)].fetch_add(n, std::sync::atomic::Ordering::Relaxed);
}

// Forwarding to the system allocator unchanged is sound; the counter is only read.
#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), std::sync::atomic::Ordering::Relaxed);
        count(layout.size(), 1);
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        count(layout.size(), -1);
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new, std::sync::atomic::Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        count(layout.size(), -1);
        count(new, 1);
        unsafe { std::alloc::System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn heap() -> u64 {
    LIVE.load(std::sync::atomic::Ordering::Relaxed) as u64
}

fn sizes() -> Vec<isize> {
    BY_SIZE
        .iter()
        .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
        .collect()
}

/// Prints the allocations that grew by at least one per 10 connections, per connection.
fn print_sizes(before: &[isize], after: &[isize], n: usize) {
    println!("\n| requested size (up to) | allocations per connection | bytes per connection |");
    println!("|---:|---:|---:|");
    let mut total = 0.0;
    for (class, (b, a)) in before.iter().zip(after).enumerate() {
        let per = (a - b) as f64 / n as f64;
        if per.abs() < 0.1 {
            continue;
        }
        let size = if class == SIZE_CLASSES - 1 {
            format!("> {}", (class - 1) * 8)
        } else {
            format!("{}", class * 8)
        };
        total += per;
        println!("| {size} | {per:.2} | {:.0} |", per * (class * 8) as f64);
    }
    println!("| all | {total:.2} | |");
}

const DEFAULT_CONNECTIONS: usize = 10_000;
const MAX_CONNECTIONS: usize = 100_000;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("--clients") {
        let addr: SocketAddr = args.get(1).expect("address").parse()?;
        let n: usize = args.get(2).expect("count").parse()?;
        let subscribe = args.get(3).map(String::as_str) == Some("--subscribe");
        return clients(addr, n, subscribe);
    }
    let subscribe = args.iter().any(|a| a == "--subscribe");
    let by_size = args.iter().any(|a| a == "--sizes");
    let args: Vec<String> = args
        .into_iter()
        .filter(|a| a != "--subscribe" && a != "--sizes")
        .collect();
    let asked: usize = match args.first() {
        Some(a) => a
            .parse()
            .map_err(|_| anyhow::anyhow!("usage: idle_memory [N] [--subscribe] [--sizes]"))?,
        None => DEFAULT_CONNECTIONS,
    };
    let limit = open_files_limit()?;
    let n = asked.min(MAX_CONNECTIONS).min(limit.saturating_sub(64));
    println!(
        "open files limit (soft): {limit}; connections: {n} (asked {asked}){}",
        if subscribe { ", each subscribed" } else { "" }
    );
    anyhow::ensure!(n > 0, "no connections possible");

    let mut rows = vec![ours(n, subscribe, by_size)?];
    match mosquitto(n, subscribe) {
        Ok(row) => rows.push(row),
        Err(e) => println!("mosquitto not measured: {e:#}"),
    }
    println!();
    println!(
        "| server | connections | RSS before | RSS with connections | RSS delta | RSS per connection | heap per connection |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let delta = r.after.saturating_sub(r.before);
        let heap = match r.heap {
            Some(h) => format!("{} B", h / r.connections as u64),
            None => "-".into(),
        };
        println!(
            "| {} | {} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {} B | {heap} |",
            r.name,
            r.connections,
            mib(r.before),
            mib(r.after),
            mib(delta),
            delta / r.connections as u64
        );
    }
    Ok(())
}

struct Row {
    name: String,
    connections: usize,
    before: u64,
    after: u64,
    /// Heap growth (this process only).
    heap: Option<u64>,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The broker in this process.
fn ours(n: usize, subscribe: bool, by_size: bool) -> anyhow::Result<Row> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let text =
        "[[listener]]\nbind = \"127.0.0.1:0\"\n[sys]\ninterval_secs = 0\n[log]\nlevel = \"warn\"\n";
    let running = rt.block_on(start(
        Config::parse(&format!("{text}\n[persistence]\nenabled = false\n"))
            .map_err(anyhow::Error::msg)?,
        None,
    ))?;
    let addr = running.local_addrs[0];
    std::thread::sleep(Duration::from_millis(200));
    let before = rss("self")?;
    let heap_before = heap();
    let sizes_before = sizes();
    let mut child = spawn_clients(addr, n, subscribe)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while rt.block_on(running.gauges())?.sessions < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "connections not all open in time"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss("self")?;
    let heap_after = heap();
    if by_size {
        print_sizes(&sizes_before, &sizes(), n);
    }
    stop_clients(&mut child)?;
    rt.block_on(running.shutdown());
    Ok(Row {
        name: format!("mqtt-broker (adapter-tokio) {}", env!("CARGO_PKG_VERSION")),
        connections: n,
        before,
        after,
        heap: Some(heap_after.saturating_sub(heap_before)),
    })
}

/// mosquitto from the PATH, on a free loopback port.
fn mosquitto(n: usize, subscribe: bool) -> anyhow::Result<Row> {
    let version = Command::new("mosquitto")
        .arg("-h")
        .output()
        .map_err(|e| anyhow::anyhow!("mosquitto: {e}"))?;
    let version = String::from_utf8_lossy(&version.stdout)
        .lines()
        .next()
        .unwrap_or("mosquitto")
        .trim()
        .to_string();
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let dir = std::env::temp_dir().join(format!("idle-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_connections -1\n"),
    )?;
    let mut broker = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let result = (|| {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(200));
        let pid = broker.id().to_string();
        let before = rss(&pid)?;
        let mut child = spawn_clients(addr, n, subscribe)?;
        std::thread::sleep(Duration::from_millis(500));
        let after = rss(&pid)?;
        stop_clients(&mut child)?;
        Ok(Row {
            name: version,
            connections: n,
            before,
            after,
            heap: None,
        })
    })();
    let _ = broker.kill();
    let _ = broker.wait();
    let _ = std::fs::remove_dir_all(dir);
    result
}

/// Starts this program as the client process and waits until all its connections have
/// their CONNACK.
fn spawn_clients(addr: SocketAddr, n: usize, subscribe: bool) -> anyhow::Result<Child> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--clients", &addr.to_string(), &n.to_string()])
        .args(subscribe.then_some("--subscribe"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    anyhow::ensure!(line.trim() == format!("ready {n}"), "clients: {line:?}");
    Ok(child)
}

fn stop_clients(child: &mut Child) -> anyhow::Result<()> {
    drop(child.stdin.take());
    child.wait()?;
    Ok(())
}

/// The client process: N connections (each subscribed to `idle/N` if asked), then idle
/// until standard input closes.
fn clients(addr: SocketAddr, n: usize, subscribe: bool) -> anyhow::Result<()> {
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(&connect_packet(&format!("idle-{i}")))?;
        let mut connack = [0u8; 4];
        s.read_exact(&mut connack)?;
        anyhow::ensure!(connack == [0x20, 2, 0, 0], "CONNACK {connack:?}");
        if subscribe {
            s.write_all(&subscribe_packet(&format!("idle/{i}")))?;
            let mut suback = [0u8; 5];
            s.read_exact(&mut suback)?;
            anyhow::ensure!(suback == [0x90, 3, 0, 1, 1], "SUBACK {suback:?}");
        }
        conns.push(s);
    }
    println!("ready {n}");
    std::io::stdout().flush()?;
    let mut rest = vec![];
    let _ = std::io::stdin().read_to_end(&mut rest);
    drop(conns);
    Ok(())
}

/// MQTT 3.1.1 CONNECT, Clean Session 1, keep-alive 0 (no timeout while idle).
fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 0];
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut p = vec![0x10, body.len() as u8];
    p.extend_from_slice(&body);
    p
}

/// VmRSS of a process (`self` or a pid), in bytes.
fn rss(pid: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))?;
    Ok(kb * 1024)
}

/// The soft limit of open files of this process.
fn open_files_limit() -> anyhow::Result<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .ok_or_else(|| anyhow::anyhow!("no open files limit"))?;
    let soft = line["Max open files".len()..]
        .split_whitespace()
        .next()
        .unwrap_or("unlimited");
    Ok(soft.parse().unwrap_or(usize::MAX))
}

/// MQTT 3.1.1 SUBSCRIBE, packet id 1, one filter at QoS 1.
fn subscribe_packet(filter: &str) -> Vec<u8> {
    let mut body = vec![0, 1];
    body.extend_from_slice(&(filter.len() as u16).to_be_bytes());
    body.extend_from_slice(filter.as_bytes());
    body.push(1);
    let mut p = vec![0x82, body.len() as u8];
    p.extend_from_slice(&body);
    p
}
