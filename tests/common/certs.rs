//! Certificates for the HTTPS tests, made with `openssl`: a CA of the test's
//! own, and certificates for `localhost` it signs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A folder of its own under the system's temporary folder, made empty.
pub fn folder(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("multinode-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn openssl(dir: &Path, args: &[&str]) {
    let done = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl (apt-get install openssl)");
    assert!(done.success(), "openssl {args:?}");
}

/// A CA in `dir` (`ca.pem`, `ca.key`) and a certificate for `localhost` it
/// signs, of organisation `org`: `cert.pem` and `key.pem`.
pub fn site(dir: &Path, org: &str) {
    if !dir.join("ca.pem").exists() {
        let subject = ["-subj", "/CN=test CA"];
        openssl(
            dir,
            &[
                &[
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
                ][..],
                &["-out", "ca.pem", "-days", "1"],
                &subject,
            ]
            .concat(),
        );
    }
    leaf(dir, org, "cert.pem", "key.pem");
}

/// A certificate for `localhost` of organisation `org`, signed by `dir`'s CA,
/// as `cert` and `key` in `dir`.
pub fn leaf(dir: &Path, org: &str, cert: &str, key: &str) {
    let subject = format!("/CN=localhost/O={org}");
    openssl(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", "req.csr", "-subj",
            &subject,
        ],
    );
    std::fs::write(dir.join("san.cnf"), "subjectAltName=DNS:localhost\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "req.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            cert,
            "-days",
            "1",
            "-extfile",
            "san.cnf",
        ],
    );
}
