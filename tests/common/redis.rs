//! A `redis-server` of a test's own: a free loopback port, no persistence,
//! stopped when dropped.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::poll;

pub struct Redis {
    child: Child,
    pub port: u16,
    pub password: Option<String>,
    /// With TLS: the folder of its certificates (the CA is `ca.pem`).
    pub tls: Option<PathBuf>,
}

impl Redis {
    /// Starts one; `None` (the test skips) only with `MULTINODE_SKIP_REDIS=1`
    /// when `redis-server` is missing.
    pub fn start() -> Option<Redis> {
        Redis::start_on(free_port(), None)
    }

    /// Starts one on `port`, asking for `password` if given.
    pub fn start_on(port: u16, password: Option<&str>) -> Option<Redis> {
        Redis::start_with(port, password, &[])
    }

    /// [`start_on`](Self::start_on) with more of `redis-server`'s arguments.
    pub fn start_with(port: u16, password: Option<&str>, more: &[&str]) -> Option<Redis> {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(more)
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(password) = password {
            command.args(["--requirepass", password]);
        }
        let child = match command.spawn() {
            Ok(child) => child,
            Err(_) if std::env::var("MULTINODE_SKIP_REDIS").as_deref() == Ok("1") => {
                eprintln!("redis-server missing: skipped (MULTINODE_SKIP_REDIS=1)");
                return None;
            }
            Err(error) => panic!(
                "cannot start redis-server ({error}): install it (apt-get install \
                 redis-server), or set MULTINODE_SKIP_REDIS=1 to skip these tests"
            ),
        };
        let redis = Redis {
            child,
            port,
            password: password.map(str::to_owned),
            tls: None,
        };
        poll(Duration::from_secs(10), || redis.command(&["PING"]).ok())
            .expect("redis-server answers within 10 s");
        Some(redis)
    }

    /// One that speaks TLS only, with a certificate for `localhost` signed by a
    /// CA of its own (made with `openssl` in `dir`).
    pub fn start_tls(dir: &Path) -> Option<Redis> {
        super::certs::site(dir, "redis");
        let port = free_port();
        let mut command = Command::new("redis-server");
        command
            .current_dir(dir)
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args(["--tls-cert-file", "cert.pem", "--tls-key-file", "key.pem"])
            .args(["--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = match command.spawn() {
            Ok(child) => child,
            Err(_) if std::env::var("MULTINODE_SKIP_REDIS").as_deref() == Ok("1") => return None,
            Err(error) => panic!("cannot start redis-server ({error})"),
        };
        let redis = Redis {
            child,
            port,
            password: None,
            tls: Some(dir.to_owned()),
        };
        let up = poll(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        assert!(up.is_some(), "redis-server with TLS listens within 10 s");
        Some(redis)
    }

    /// The URL a program is given.
    pub fn url(&self) -> String {
        if self.tls.is_some() {
            return format!("rediss://localhost:{}", self.port);
        }
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// One command, its reply's first line (`+OK`, `$-1` for nil, …).
    pub fn command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut request = String::new();
        if let Some(password) = &self.password {
            request += &format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{password}\r\n", password.len());
        }
        request += &format!("*{}\r\n", args.len());
        for arg in args {
            request += &format!("${}\r\n{arg}\r\n", arg.len());
        }
        stream.write_all(request.as_bytes())?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        if self.password.is_some() {
            reader.read_line(&mut line)?; // +OK of AUTH
            line.clear();
        }
        reader.read_line(&mut line)?;
        if line.starts_with('$') && line.trim() != "$-1" {
            line.clear();
            reader.read_line(&mut line)?; // the bulk string itself
        }
        Ok(line.trim().to_owned())
    }
}

impl Redis {
    /// A sentinel on a free port, watching the primary at `primary_port`
    /// under the name `main` (2 sentinels agree it is down after 1 s), its
    /// configuration (which it rewrites) in `dir`.
    pub fn start_sentinel(dir: &Path, primary_port: u16) -> Redis {
        let port = free_port();
        let conf = dir.join(format!("sentinel-{port}.conf"));
        let text = format!(
            "port {port}\nbind 127.0.0.1\n\
             sentinel monitor main 127.0.0.1 {primary_port} 2\n\
             sentinel down-after-milliseconds main 1000\n\
             sentinel failover-timeout main 5000\n"
        );
        std::fs::write(&conf, text).unwrap();
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel");
        let sentinel = Redis {
            child,
            port,
            password: None,
            tls: None,
        };
        poll(Duration::from_secs(10), || sentinel.command(&["PING"]).ok())
            .expect("the sentinel answers within 10 s");
        sentinel
    }

    /// Sends `signal` to the server (SIGSTOP: a Redis that hangs, its
    /// connections open and silent).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
