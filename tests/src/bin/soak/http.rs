//! Just enough HTTP/1.1 framing to cut a request where its body is, and to tell one request on a
//! kept-alive connection from the next: the proxy and the webhook receiver read whole requests.

use tokio::io::{AsyncRead, AsyncReadExt};

/// One request as it came over the wire.
pub struct Request {
    /// The head and the body, byte for byte.
    pub bytes: Vec<u8>,
    /// Where the body starts in `bytes`.
    pub head_len: usize,
    /// The method (`GET`, `POST`).
    pub method: String,
    /// The header lines, names in lower case.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The body's bytes.
    pub fn body(&self) -> &[u8] {
        &self.bytes[self.head_len..]
    }

    /// The first value of a header (`name` in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// The heads this reads are a client library's or the server's; anything larger is refused so a
/// broken peer cannot grow the buffer without bound.
const MAX_HEAD: usize = 64 * 1024;

/// Reads the next request from `reader`, keeping bytes past its end in `buffer` for the next call.
/// `Ok(None)` when the peer closed the connection between requests. A chunked request body is an
/// error: neither peer of this program sends one.
pub async fn read_request<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut Vec<u8>,
) -> std::io::Result<Option<Request>> {
    let head_len = loop {
        if let Some(end) = memchr_subslice(buffer, b"\r\n\r\n") {
            break end + 4;
        }
        if buffer.len() > MAX_HEAD {
            return Err(std::io::Error::other("request head too large"));
        }
        let mut chunk = [0u8; 8192];
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return if buffer.is_empty() { Ok(None) } else { Err(std::io::ErrorKind::UnexpectedEof.into()) };
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_len]).into_owned();
    let mut lines = head.split("\r\n");
    let method = lines.next().and_then(|l| l.split(' ').next()).unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    if headers.iter().any(|(n, v)| n == "transfer-encoding" && !v.eq_ignore_ascii_case("identity")) {
        return Err(std::io::Error::other("chunked request bodies are not expected"));
    }
    let body_len = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse::<usize>().map_err(|_| std::io::Error::other("bad content-length")))
        .transpose()?
        .unwrap_or(0);
    let total = head_len + body_len;
    while buffer.len() < total {
        let mut chunk = [0u8; 8192];
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let rest = buffer.split_off(total);
    let bytes = std::mem::replace(buffer, rest);
    Ok(Some(Request { bytes, head_len, method, headers }))
}

fn memchr_subslice(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
