//! The HTTP transport of the S3 backend: hyper's pooled HTTP/1.1 client over TCP
//! connections that acknowledge every read at once (TCP_QUICKACK).
//!
//! Why: a server that writes a response's headers and body in two writes with Nagle's
//! algorithm on (Ceph's RADOS Gateway does) holds the body's last, short segment until the
//! client acknowledges what came before, and Linux delays that acknowledgement by up to
//! 40 ms on a connection that alternates requests and answers. Measured on RGW, 1 GiB
//! restore: a third of the chunk GETs waited 40 ms. Linux resets TCP_QUICKACK by itself,
//! so it is set again after every read that returned data.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use object_store::client::{
    HttpError, HttpErrorKind, HttpRequest, HttpRequestBody, HttpResponse, HttpResponseBody,
    HttpService,
};
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A TCP connection that acknowledges received data at once.
pub struct QuickAck(TokioIo<TcpStream>);

impl QuickAck {
    fn acknowledge(&self) {
        // Best effort: a socket that refuses only loses the speed-up.
        let _ = rustix::net::sockopt::set_tcp_quickack(self.0.inner(), true);
    }
}

impl Read for QuickAck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.0).poll_read(cx, buf);
        if polled.is_ready() {
            self.acknowledge();
        }
        polled
    }
}

impl Write for QuickAck {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
}

impl Connection for QuickAck {
    fn connected(&self) -> Connected {
        self.0.inner().connected()
    }
}

/// Connects as hyper's HttpConnector does, then wraps the stream in QuickAck.
#[derive(Clone, Debug)]
pub struct QuickAckConnector(HttpConnector);

impl QuickAckConnector {
    pub fn new(connect_timeout: Duration) -> QuickAckConnector {
        // Plain http:// only (enforced: an https:// URI here fails instead of speaking
        // plaintext to a TLS port); TLS endpoints keep object_store's reqwest client.
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        QuickAckConnector(http)
    }
}

impl tower_service::Service<http::Uri> for QuickAckConnector {
    type Response = QuickAck;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<QuickAck, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move { Ok(QuickAck(connecting.await?)) })
    }
}

/// object_store's HTTP service on hyper with QuickAck connections.
#[derive(Debug)]
pub struct Transport {
    client: Client<QuickAckConnector, HttpRequestBody>,
    timeout: Duration,
}

impl Transport {
    pub fn new(connect_timeout: Duration, timeout: Duration) -> Transport {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(QuickAckConnector::new(connect_timeout));
        Transport { client, timeout }
    }
}

fn kind_of(e: &hyper_util::client::legacy::Error) -> HttpErrorKind {
    if e.is_connect() {
        HttpErrorKind::Connect
    } else {
        HttpErrorKind::Request
    }
}

#[async_trait::async_trait]
impl HttpService for Transport {
    async fn call(&self, mut req: HttpRequest) -> Result<HttpResponse, HttpError> {
        req.headers_mut()
            .entry(http::header::USER_AGENT)
            .or_insert(http::HeaderValue::from_static(super::remote::USER_AGENT));
        // One deadline for the answer and its whole body, as reqwest's `timeout` has: a
        // server that drips bytes cannot hold a request open beyond it.
        let deadline = tokio::time::Instant::now() + self.timeout;
        let answer = tokio::time::timeout_at(deadline, self.client.request(req))
            .await
            .map_err(|e| HttpError::new(HttpErrorKind::Timeout, e))?
            .map_err(|e| HttpError::new(kind_of(&e), e))?;
        let (parts, body) = answer.into_parts();
        let body = Deadline {
            body,
            at: Box::pin(tokio::time::sleep_until(deadline)),
        };
        Ok(HttpResponse::from_parts(parts, HttpResponseBody::new(body)))
    }
}

/// A response body that fails with a timeout once its deadline passes.
struct Deadline {
    body: hyper::body::Incoming,
    at: Pin<Box<tokio::time::Sleep>>,
}

impl hyper::body::Body for Deadline {
    type Data = bytes::Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, HttpError>>> {
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(
                frame.map(|f| f.map_err(|e| HttpError::new(HttpErrorKind::Interrupted, e))),
            ),
            Poll::Pending => match self.at.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(HttpError::new(
                    HttpErrorKind::Timeout,
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the response body did not arrive in time",
                    ),
                )))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// True when no proxy variable (which reqwest would follow) is set: the QuickAck transport
/// connects directly, so it is used only then.
pub fn no_proxy_set() -> bool {
    ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
        .iter()
        .all(|v| std::env::var_os(v).is_none_or(|v| v.is_empty()))
}

/// The connector object_store asks for its client.
#[derive(Debug)]
pub struct QuickAckHttp {
    pub connect_timeout: Duration,
    pub timeout: Duration,
}

impl object_store::client::HttpConnector for QuickAckHttp {
    fn connect(
        &self,
        _options: &object_store::ClientOptions,
    ) -> object_store::Result<object_store::client::HttpClient> {
        Ok(object_store::client::HttpClient::new(Transport::new(
            self.connect_timeout,
            self.timeout,
        )))
    }
}
