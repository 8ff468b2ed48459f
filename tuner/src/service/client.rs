//! HTTP client of the service's API, for the CLI and the workers.

use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

/// Port of `bocb serve` when `--listen` names none.
pub const DEFAULT_PORT: u16 = 7878;
/// The token file below the store directory.
pub const TOKEN_FILE: &str = "service-token";
/// The file below the store directory where the service writes its URL.
pub const URL_FILE: &str = "service-url";
/// The copy of an HTTPS service's certificate below the store directory,
/// which clients on this machine trust.
pub const CERT_FILE: &str = "service-cert.pem";

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot reach the bocb service at {url}: {reason}; is `bocb serve` running there (see --server)?{}", tls_hint(url, reason))]
    Unreachable { url: String, reason: String },
    #[error(
        "the service refused the token (401); pass the one in STORE/service-token with --token"
    )]
    Unauthorized,
    #[error("the service no longer knows this trial attempt (410)")]
    Gone,
    #[error("{message}")]
    Refused { status: u16, message: String },
    #[error("unexpected answer from the service at {url}: {reason}")]
    BadAnswer { url: String, reason: String },
    #[error("no service token: pass --token, set BOCB_TOKEN, or point --store at the service's store (no {} there)", .0.display())]
    NoToken(PathBuf),
    #[error("cannot use {} as the service's certificate (--ca, BOCB_CA or STORE/service-cert.pem): {reason}", path.display())]
    Certificate { path: PathBuf, reason: String },
}

/// What to try when a request failed the way a TLS mismatch fails.
fn tls_hint(url: &str, reason: &str) -> &'static str {
    if url.starts_with("http://") {
        " (a service started with --tls-cert speaks HTTPS only: use its https:// URL, as STORE/service-url has it)"
    } else if reason.contains("certificate") {
        " (a service with its own certificate needs it trusted: pass --ca PEM or set BOCB_CA)"
    } else {
        ""
    }
}

/// Whether `base` (`SCHEME://HOST:PORT`) names this machine: a loopback
/// or unspecified address, or `localhost`.
fn names_this_machine(base: &str) -> bool {
    let authority = base
        .split_once("://")
        .map_or(base, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
}

/// The TLS connector of an `https://` client: the system's roots plus the
/// certificates in `ca`. Reaching this machine with a `ca`, only `ca` is
/// trusted and the host name is not checked: the URL a service writes may
/// name `0.0.0.0` or an address its certificate does not list, and only
/// the holder of the certificate's key can answer.
fn tls_connector(base: &str, ca: Option<&Path>) -> Result<native_tls::TlsConnector, ClientError> {
    let mut builder = native_tls::TlsConnector::builder();
    if let Some(path) = ca {
        let bad = |reason: String| ClientError::Certificate {
            path: path.to_path_buf(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let certificates = native_tls::Certificate::stack_from_pem(&pem)
            .map_err(|e| bad(format!("not PEM certificates ({e})")))?;
        if certificates.is_empty() {
            return Err(bad("it holds no PEM certificate".to_string()));
        }
        for certificate in certificates {
            builder.add_root_certificate(certificate);
        }
        if names_this_machine(base) {
            builder
                .disable_built_in_roots(true)
                .danger_accept_invalid_hostnames(true);
        }
    }
    builder.build().map_err(|e| ClientError::Certificate {
        path: ca.map_or_else(|| PathBuf::from("(system roots)"), Path::to_path_buf),
        reason: e.to_string(),
    })
}

/// How long a checkpoint's transfer may take (other requests: two minutes).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(3600);

/// A connection to one service with its token.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Client {
    /// `server` is `http://HOST:PORT`, `https://HOST:PORT` or `HOST:PORT`
    /// (HTTP); an HTTPS service's certificate is trusted through the
    /// system's roots, or `ca` (a PEM file of the certificate or its CA).
    pub fn new(server: &str, token: &str, ca: Option<&Path>) -> Result<Self, ClientError> {
        let server = server.trim().trim_end_matches('/');
        let base = if server.contains("://") {
            server.to_string()
        } else {
            format!("http://{server}")
        };
        let mut agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout(Duration::from_secs(120));
        if base.starts_with("https://") {
            // No connection is kept for later: the service closes one that
            // stays silent for seconds, and a request sent as it closes
            // would be lost (a worker's finish, for one).
            agent = agent
                .tls_connector(Arc::new(tls_connector(&base, ca)?))
                .max_idle_connections(0);
        }
        Ok(Client {
            base,
            token: token.trim().to_string(),
            agent: agent.build(),
        })
    }

    /// The client of the service that holds (or held) the store at
    /// `store_dir`: `server`, else the URL in STORE/service-url, else
    /// this machine's default port; `token`, else BOCB_TOKEN, else
    /// STORE/service-token; `ca`, else BOCB_CA, else the certificate the
    /// service copied to STORE/service-cert.pem.
    pub fn for_store(
        store_dir: &Path,
        server: Option<String>,
        token: Option<String>,
        ca: Option<PathBuf>,
    ) -> Result<Self, ClientError> {
        let from_store = |file: &str| {
            std::fs::read_to_string(store_dir.join(file))
                .ok()
                .map(|text| text.trim().to_string())
                .filter(|text| !text.is_empty())
        };
        let server = server
            .or_else(|| from_store(URL_FILE))
            .unwrap_or_else(|| format!("http://127.0.0.1:{DEFAULT_PORT}"));
        let token = token
            .or_else(|| std::env::var("BOCB_TOKEN").ok())
            .or_else(|| from_store(TOKEN_FILE))
            .ok_or_else(|| ClientError::NoToken(store_dir.join(TOKEN_FILE)))?;
        let stored_cert = store_dir.join(CERT_FILE);
        let ca = ca
            .or_else(|| std::env::var_os("BOCB_CA").map(PathBuf::from))
            .or_else(|| stored_cert.exists().then_some(stored_cert));
        Client::new(&server, &token, ca.as_deref())
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// GET `path` (under the server), decoded from JSON.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let response = self.call(&url, self.agent.get(&url).set_auth(&self.token).call())?;
        decode(&url, response)
    }

    /// GET `path` as text.
    pub fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let url = format!("{}{path}", self.base);
        let response = self.call(&url, self.agent.get(&url).set_auth(&self.token).call())?;
        // Read whole: `into_string` stops at 10 MB, and an HTML report may be larger.
        let mut text = String::new();
        response
            .into_reader()
            .read_to_string(&mut text)
            .map_err(|e| ClientError::BadAnswer {
                url,
                reason: e.to_string(),
            })?;
        Ok(text)
    }

    /// POST `body` as JSON to `path`; `None` when the service answers 204.
    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Option<T>, ClientError> {
        let url = format!("{}{path}", self.base);
        let request = self.agent.post(&url).set_auth(&self.token);
        let response = self.call(&url, request.send_json(body))?;
        if response.status() == 204 {
            return Ok(None);
        }
        decode(&url, response).map(Some)
    }

    /// PUT the `length` bytes of `body` (a checkpoint archive) to `path`,
    /// streamed.
    pub fn put_stream(&self, path: &str, body: impl Read, length: u64) -> Result<(), ClientError> {
        let url = format!("{}{path}", self.base);
        let request = self
            .agent
            .put(&url)
            .set_auth(&self.token)
            .timeout(TRANSFER_TIMEOUT)
            .set("Content-Type", "application/x-tar")
            .set("Content-Length", &length.to_string());
        self.call(&url, request.send(body))?;
        Ok(())
    }

    /// GET `path` as a stream of bytes, with the length the service
    /// announced; `None` when it answers 204.
    pub fn get_stream(&self, path: &str) -> Result<Option<(impl Read, u64)>, ClientError> {
        let url = format!("{}{path}", self.base);
        let request = self
            .agent
            .get(&url)
            .set_auth(&self.token)
            .timeout(TRANSFER_TIMEOUT);
        let response = self.call(&url, request.call())?;
        if response.status() == 204 {
            return Ok(None);
        }
        let length = response
            .header("Content-Length")
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| ClientError::BadAnswer {
                url: url.clone(),
                reason: "no Content-Length on a checkpoint".to_string(),
            })?;
        Ok(Some((response.into_reader(), length)))
    }

    fn call(
        &self,
        url: &str,
        result: Result<ureq::Response, ureq::Error>,
    ) -> Result<ureq::Response, ClientError> {
        match result {
            Ok(response) => Ok(response),
            Err(ureq::Error::Status(401, _)) => Err(ClientError::Unauthorized),
            Err(ureq::Error::Status(410, _)) => Err(ClientError::Gone),
            Err(ureq::Error::Status(status, response)) => {
                let body = response.into_string().unwrap_or_default();
                let message = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_string))
                    .unwrap_or(body);
                Err(ClientError::Refused { status, message })
            }
            Err(ureq::Error::Transport(t)) => Err(ClientError::Unreachable {
                url: url.to_string(),
                reason: t.to_string(),
            }),
        }
    }
}

trait SetAuth {
    fn set_auth(self, token: &str) -> Self;
}

impl SetAuth for ureq::Request {
    fn set_auth(self, token: &str) -> Self {
        self.set("Authorization", &format!("Bearer {token}"))
    }
}

fn decode<T: DeserializeOwned>(url: &str, response: ureq::Response) -> Result<T, ClientError> {
    response.into_json().map_err(|e| ClientError::BadAnswer {
        url: url.to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_is_loopback_unspecified_or_localhost() {
        for local in [
            "https://127.0.0.1:7878",
            "https://0.0.0.0:1",
            "https://[::1]:80/x",
            "https://localhost:7878",
            "https://[::]:9",
        ] {
            assert!(names_this_machine(local), "{local}");
        }
        for remote in [
            "https://gpu-box:7878",
            "https://10.0.0.2:7878",
            "https://[2001:db8::1]:1",
        ] {
            assert!(!names_this_machine(remote), "{remote}");
        }
    }

    #[test]
    fn a_bad_certificate_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let error = Client::new("https://127.0.0.1:1", "t", Some(&missing))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("missing.pem"), "{error}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let error = Client::new("https://127.0.0.1:1", "t", Some(&empty))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("empty.pem"), "{error}");
        // Plain HTTP has no use for a certificate.
        assert!(Client::new("http://127.0.0.1:1", "t", Some(&missing)).is_ok());
    }
}
