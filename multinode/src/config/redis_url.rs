//! The `cluster` URL: one Redis server (`redis://`, `rediss://`,
//! `redis+unix://`), or the primary that Redis Sentinel names
//! (`redis+sentinel://`). It may hold a password, shown only through
//! [`redact`].

/// What a `cluster` URL points at.
#[derive(Debug, PartialEq)]
pub(crate) enum Target {
    /// One server: the URL as the `redis` crate reads it.
    Server,
    /// The primary that the sentinels name `master`.
    Sentinel(Sentinels),
}

/// `redis+sentinel://[[user]:password@]host[:port][,host[:port]…]/master[/db]`:
/// the sentinels (port 26379 by default), the name of the primary they watch,
/// and how to log in to it (the sentinels themselves are asked without).
#[derive(PartialEq)]
pub(crate) struct Sentinels {
    pub addrs: Vec<(String, u16)>,
    pub master: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: i64,
}

impl std::fmt::Debug for Sentinels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sentinels")
            .field("addrs", &self.addrs)
            .field("master", &self.master)
            .finish_non_exhaustive()
    }
}

const SENTINEL_SCHEME: &str = "redis+sentinel://";
const SENTINEL_PORT: u16 = 26379;

/// What `url` points at; the `Server` form is checked by the `redis` crate.
pub(crate) fn target(url: &str) -> Result<Target, String> {
    let Some(rest) = url.strip_prefix(SENTINEL_SCHEME) else {
        return Ok(Target::Server);
    };
    let form = "expected redis+sentinel://[:password@]host:port,host:port/master-name[/db]";
    let (userinfo, rest) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let (hosts, path) = rest.split_once('/').ok_or(form)?;
    let mut path = path.split('/');
    let master = path.next().filter(|m| !m.is_empty()).ok_or(form)?;
    let db = match path.next() {
        None | Some("") => 0,
        Some(db) => db
            .parse()
            .map_err(|_| format!("{db:?} is not a database number"))?,
    };
    let mut addrs = Vec::new();
    for host in hosts.split(',') {
        let (name, port) = match host.rsplit_once(':') {
            // `[::1]:26380`, `h:26380`; not `[::1]`.
            Some((name, port)) if !host.starts_with('[') || name.ends_with(']') => {
                let port = port
                    .parse()
                    .map_err(|_| format!("{port:?} is not a port"))?;
                (name, port)
            }
            _ => (host, SENTINEL_PORT),
        };
        let name = name.trim_start_matches('[').trim_end_matches(']');
        if name.is_empty() {
            return Err(form.into());
        }
        addrs.push((name.to_owned(), port));
    }
    let (username, password) = match userinfo.map(|u| u.split_once(':').unwrap_or((u, ""))) {
        Some((user, pass)) => (
            (!user.is_empty()).then(|| decode(user)),
            (!pass.is_empty()).then(|| decode(pass)),
        ),
        None => (None, None),
    };
    Ok(Target::Sentinel(Sentinels {
        addrs,
        master: decode(master),
        username,
        password,
        db,
    }))
}

/// `text` with its `%XX` escapes decoded.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `url` with its password, wherever it is, replaced by `***`: in the user
/// part (up to the last `@`, as a password may hold an unencoded `/`) and in
/// a `pass` or `password` query parameter (`redis+unix:///s?pass=…`).
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let mut shown = match rest.rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***{}", &rest[at..])
        }
        None => format!("{scheme}://{rest}"),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((name, _)) if matches!(name, "pass" | "password") => format!("{name}=***"),
                _ => param.to_owned(),
            })
            .collect();
        shown = format!("{shown}?{}", params.join("&"));
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_never_shown_in_any_url_form() {
        for (url, shown) in [
            ("redis://:secret@host:6379/0", "redis://:***@host:6379/0"),
            ("rediss://user:secret@host", "rediss://user:***@host"),
            ("redis://:se/cr@et@host/2", "redis://:***@host/2"),
            ("redis://host:6379", "redis://host:6379"),
            ("redis+unix:///tmp/r.sock", "redis+unix:///tmp/r.sock"),
            (
                "redis+unix:///tmp/r.sock?db=1&pass=secret",
                "redis+unix:///tmp/r.sock?db=1&pass=***",
            ),
            (
                "redis+sentinel://:secret@a:1,b:2/main",
                "redis+sentinel://:***@a:1,b:2/main",
            ),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
    }

    #[test]
    fn a_sentinel_url_names_the_sentinels_the_primary_and_its_login() {
        let Target::Sentinel(s) =
            target("redis+sentinel://:p%40ss@10.0.0.1:5000,h2/main/3").unwrap()
        else {
            panic!("a sentinel URL")
        };
        assert_eq!(
            s.addrs,
            [("10.0.0.1".to_owned(), 5000), ("h2".to_owned(), 26379)]
        );
        assert_eq!((s.master.as_str(), s.db), ("main", 3));
        assert_eq!((s.username, s.password.as_deref()), (None, Some("p@ss")));
        assert!(!format!("{:?}", target("redis+sentinel://:pw@h/m")).contains("pw"));
        assert_eq!(target("redis://h").unwrap(), Target::Server);
        for bad in [
            "redis+sentinel://h",
            "redis+sentinel://h/",
            "redis+sentinel://h:x/m",
            "redis+sentinel://,h/m",
            "redis+sentinel://h/m/x",
        ] {
            assert!(target(bad).is_err(), "{bad}");
        }
    }
}
