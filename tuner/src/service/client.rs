//! HTTP client of the service's API, for the CLI and the workers.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot reach the bocb service at {url}: {reason}; is `bocb serve` running there (see --server)?")]
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
}

/// A connection to one service with its token.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Client {
    /// `server` is `http://HOST:PORT` (or `HOST:PORT`).
    pub fn new(server: &str, token: &str) -> Self {
        let server = server.trim().trim_end_matches('/');
        let base = if server.contains("://") {
            server.to_string()
        } else {
            format!("http://{server}")
        };
        Client {
            base,
            token: token.trim().to_string(),
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(5))
                .timeout(Duration::from_secs(120))
                .build(),
        }
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
        response.into_string().map_err(|e| ClientError::BadAnswer {
            url,
            reason: e.to_string(),
        })
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
