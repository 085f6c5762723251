//! A connection to one NAS, on which calls are made one at a time.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

use super::guard::{self, Transport};
use super::rpc::RpcChannel;
use super::transport::{self, WsStream};
use super::{ClientError, Limits, SystemUrl, TlsTrust};

/// An open JSON-RPC connection to a NAS, verified against the trust it was opened with.
pub struct Session {
    rpc: RpcChannel,
    transport: Transport,
    trust: TlsTrust,
    url: SystemUrl,
}

impl Session {
    /// Connects to `url`'s `/api/current`, checking its certificate against `trust`.
    ///
    /// A NAS that answers the upgrade with HTTP 404 runs TrueNAS 24.10 or older and gives
    /// [`ClientError::UnsupportedVersion`].
    pub async fn connect(
        url: &SystemUrl,
        trust: &TlsTrust,
        limits: &Limits,
    ) -> Result<Self, ClientError> {
        let (ws, transport) = transport::open(url, trust, limits).await?;
        Ok(Self::on_open(ws, transport, trust, url, limits))
    }

    /// A session on a WebSocket that is already open.
    pub(super) fn on_open(
        ws: WsStream,
        transport: Transport,
        trust: &TlsTrust,
        url: &SystemUrl,
        limits: &Limits,
    ) -> Self {
        Self {
            rpc: RpcChannel::new(ws, *limits),
            transport,
            trust: trust.clone(),
            url: url.clone(),
        }
    }

    pub fn url(&self) -> &SystemUrl {
        &self.url
    }

    /// Calls `method` and returns its result.
    ///
    /// `params` is the JSON array of positional arguments; `null` sends none, and any other
    /// single value is sent as the only argument.
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, ClientError> {
        let params = match params {
            Value::Array(items) => items,
            Value::Null => Vec::new(),
            single => vec![single],
        };
        self.rpc.call(method, &params).await
    }

    /// Makes a call whose parameters hold `secret`, after [`guard::check_may_send_secret`].
    pub(super) async fn call_with_secret<P: Serialize + ?Sized>(
        &mut self,
        method: &str,
        params: &P,
        secret: &str,
    ) -> Result<Value, ClientError> {
        guard::check_may_send_secret(&self.transport, &self.trust)?;
        let reply = self.rpc.call(method, params).await;
        reply.map_err(|e| e.without_secret(secret))
    }

    /// Ends the session politely; errors on the way out are ignored.
    pub async fn close(self) {
        self.rpc.close().await;
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("url", &self.url)
            .field("peer", &self.transport.peer)
            .field("security", &self.transport.security)
            .finish_non_exhaustive()
    }
}
