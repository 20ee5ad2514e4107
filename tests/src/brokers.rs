//! Real message brokers for the tests, on loopback ports of their own:
//! `nats-server` with JetStream, and a private RabbitMQ node (its own node
//! name, ports, epmd and data directory). Each is stopped when dropped.
//! The packages are Debian's `nats-server` and `rabbitmq-server`, which
//! `cargo xtask test` installs when missing.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Wait until `port` on loopback takes connections, or panic naming `what`
/// and its log.
fn wait_for_port(port: u16, what: &str, log: &Path, child: &mut Child) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited ({status}) before listening on {port}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{what} did not listen on 127.0.0.1:{port} within 90 s: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn need(binary: &str, package: &str) {
    assert!(
        Path::new(binary).exists(),
        "{binary} is missing: install Debian's {package} (cargo xtask test installs it)"
    );
}

/// A `nats-server` with JetStream, storing in a directory of its own.
pub struct Nats {
    child: Child,
    /// Its client port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
}

impl Nats {
    /// Start one with JetStream on a free port.
    pub fn start() -> Nats {
        Nats::start_with(&[])
    }

    /// Start one with extra `nats-server` arguments (e.g. `--user`, `--pass`).
    pub fn start_with(args: &[&str]) -> Nats {
        need("/usr/sbin/nats-server", "nats-server");
        let dir = tempfile::tempdir().expect("temp dir");
        let port = crate::free_addr().port();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let log = dir.path().join("nats.log");
        let mut child = Nats::spawn(dir.path(), port, &log, &args);
        wait_for_port(port, "nats-server", &log, &mut child);
        Nats {
            child,
            port,
            dir,
            args,
        }
    }

    /// `nats://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kill it with SIGKILL (its data stays for [`Nats::revive`]).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start it again on the same port and data.
    pub fn revive(&mut self) {
        self.kill();
        let log = self.dir.path().join("nats.log");
        self.child = Nats::spawn(self.dir.path(), self.port, &log, &self.args);
        wait_for_port(self.port, "nats-server", &log, &mut self.child);
    }

    fn spawn(dir: &Path, port: u16, log: &Path, args: &[String]) -> Child {
        Command::new("/usr/sbin/nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.join("js"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .expect("log"),
            )
            .spawn()
            .expect("nats-server starts")
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A JetStream cluster of `nats-server` processes on loopback (routes
/// between them, each with its own store), for replicated streams.
pub struct NatsCluster {
    nodes: Vec<Option<Child>>,
    /// The client ports, one per node.
    pub ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Start `n` nodes (at least 3 for R3 streams) and wait until each listens.
    pub fn start(n: usize) -> NatsCluster {
        need("/usr/sbin/nats-server", "nats-server");
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<u16> = (0..n).map(|_| crate::free_addr().port()).collect();
        let routes: Vec<u16> = (0..n).map(|_| crate::free_addr().port()).collect();
        let all_routes = routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for i in 0..n {
            let log = dir.path().join(format!("n{i}.log"));
            let mut child = Command::new("/usr/sbin/nats-server")
                .args(["-a", "127.0.0.1", "-p", &ports[i].to_string(), "-js"])
                .args(["-n", &format!("n{i}"), "--cluster_name", "weft-test"])
                .args(["--cluster", &format!("nats://127.0.0.1:{}", routes[i])])
                .args(["--routes", &all_routes, "-sd"])
                .arg(dir.path().join(format!("js{i}")))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log"))
                .spawn()
                .expect("nats-server starts");
            wait_for_port(ports[i], "nats-server", &log, &mut child);
            nodes.push(Some(child));
        }
        NatsCluster {
            nodes,
            ports,
            _dir: dir,
        }
    }

    /// Every node's URL, comma-separated.
    pub fn urls(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kill node `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// A private RabbitMQ node: its own node name, AMQP, distribution and epmd
/// ports, cookie and data, so it neither sees nor disturbs any other.
pub struct Rabbit {
    node: Child,
    epmd: Child,
    /// Its AMQP port on 127.0.0.1.
    pub port: u16,
    dist: u16,
    epmd_port: u16,
    dir: tempfile::TempDir,
}

impl Rabbit {
    /// Start one (about five seconds on two cores).
    pub fn start() -> Rabbit {
        need("/usr/lib/rabbitmq/bin/rabbitmq-server", "rabbitmq-server");
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("enabled_plugins"), "[].\n").expect("plugins file");
        let (port, dist, epmd_port) = (
            crate::free_addr().port(),
            crate::free_addr().port(),
            crate::free_addr().port(),
        );
        let epmd = Command::new("epmd")
            .args(["-port", &epmd_port.to_string(), "-address", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("epmd starts");
        let node = Rabbit::spawn(dir.path(), port, dist, epmd_port);
        let mut rabbit = Rabbit {
            node,
            epmd,
            port,
            dist,
            epmd_port,
            dir,
        };
        rabbit.wait();
        rabbit
    }

    fn spawn(d: &Path, port: u16, dist: u16, epmd_port: u16) -> Child {
        let log = d.join("rabbit.log");
        let mut cmd = Command::new("/usr/lib/rabbitmq/bin/rabbitmq-server");
        cmd.env("HOME", d)
            .env("RABBITMQ_NODENAME", format!("weft-test-{port}@localhost"))
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist.to_string())
            .env("ERL_EPMD_PORT", epmd_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", d.join("advanced.config"))
            .env("RABBITMQ_CONF_ENV_FILE", d.join("rabbitmq-env.conf"))
            .stdout(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .expect("log"),
            )
            .stderr(Stdio::null());
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        cmd.spawn().expect("rabbitmq-server starts")
    }

    fn wait(&mut self) {
        let log = self.dir.path().join("rabbit.log");
        wait_for_port(self.port, "rabbitmq-server", &log, &mut self.node);
    }

    /// `amqp://127.0.0.1:PORT/%2f` (user `guest`, password `guest`, which
    /// RabbitMQ allows from loopback).
    pub fn url(&self) -> String {
        format!("amqp://127.0.0.1:{}/%2f", self.port)
    }

    /// Kill the node with SIGKILL (its data stays for [`Rabbit::revive`]).
    pub fn kill(&mut self) {
        // The node runs as a process group (a shell, beam, its helpers).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.node.id())])
            .status();
        let _ = self.node.wait();
    }

    /// Start the node again on the same ports and data.
    pub fn revive(&mut self) {
        self.kill();
        self.node = Rabbit::spawn(self.dir.path(), self.port, self.dist, self.epmd_port);
        self.wait();
    }
}

impl Drop for Rabbit {
    fn drop(&mut self) {
        self.kill();
        let _ = self.epmd.kill();
        let _ = self.epmd.wait();
    }
}
