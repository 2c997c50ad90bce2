//! The files of a web app, served from `static_dir` at every path that is neither an entity's
//! nor reserved, so that a persistence.js app and the server share one origin (which cookie
//! authentication needs: a push authenticated by a cookie must come from the server's own pages).
//!
//! A request's path is checked before the file system is touched: its segments are
//! percent-decoded one by one, and a segment that decodes to `.` or `..`, or holds a `/`, a `\`
//! or a NUL, makes the request `400 invalid_path`, as does a path longer than
//! [`MAX_PATH_BYTES`], an empty segment or a broken escape. The file found is then resolved
//! (symbolic links followed) and served only if it still lies inside the directory. Hidden
//! names (a segment starting with `.`, such as `.git`) are never served.

use std::io::Read;
use std::path::{Path, PathBuf};

use actix_web::body::SizedStream;
use actix_web::http::{Method, header};
use actix_web::{HttpRequest, HttpResponse, web};

use crate::error::ApiError;

/// The longest request path looked up, in bytes (percent-encoded, as sent).
pub const MAX_PATH_BYTES: usize = 1024;

/// What a directory answers with.
const INDEX: &str = "index.html";

/// How much of a file one read takes (the answer is streamed in pieces of this size).
const CHUNK_BYTES: usize = 64 * 1024;

/// A directory whose files are served. Only files under it (after resolving symbolic links) are
/// ever read.
#[derive(Debug, Clone)]
pub struct StaticFiles {
    root: PathBuf,
}

/// Why a path is not served.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The path is malformed or tries to leave the directory: `400 invalid_path`.
    #[error("{0}")]
    Invalid(String),
    /// Nothing is served there: `404 not_found`.
    #[error("no file is served at {0}")]
    Missing(String),
}

/// What a path resolves to.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// A regular file inside the directory.
    File(PathBuf),
    /// A directory asked for without its trailing `/`: the page's relative links need it, so the
    /// answer redirects there.
    Directory,
}

impl StaticFiles {
    /// The files of `dir`, which must be a readable directory.
    pub fn open(dir: &Path) -> Result<Self, String> {
        let root = dir.canonicalize().map_err(|e| format!("static_dir {}: {e}", dir.display()))?;
        if !root.is_dir() {
            return Err(format!("static_dir {} is not a directory", dir.display()));
        }
        Ok(Self { root })
    }

    /// The file `raw_path` (a request's path as sent, percent-encoded) names: the path checked
    /// as the module doc says, `index.html` for a directory.
    pub fn resolve(&self, raw_path: &str) -> Result<Found, Refused> {
        let shown: String = raw_path.chars().take(200).collect();
        if raw_path.len() > MAX_PATH_BYTES {
            return Err(Refused::Invalid(format!("the path is longer than {MAX_PATH_BYTES} bytes")));
        }
        let Some(rest) = raw_path.strip_prefix('/') else {
            return Err(Refused::Invalid(format!("the path {shown:?} does not start with /")));
        };
        let mut path = self.root.clone();
        let mut segments = rest.split('/').peekable();
        let mut wants_directory = rest.is_empty();
        while let Some(raw) = segments.next() {
            if raw.is_empty() {
                if segments.peek().is_none() {
                    wants_directory = true;
                    break;
                }
                return Err(Refused::Invalid(format!("the path {shown:?} has an empty segment")));
            }
            let segment = decode_segment(raw).map_err(Refused::Invalid)?;
            if segment.starts_with('.') {
                return Err(Refused::Missing(shown));
            }
            path.push(segment);
        }
        if wants_directory {
            path.push(INDEX);
        }
        // Symbolic links are followed, then the result must still be inside: a link pointing out
        // of the directory is treated as absent rather than served.
        let real = path.canonicalize().map_err(|_| Refused::Missing(shown.clone()))?;
        if !real.starts_with(&self.root) {
            return Err(Refused::Missing(shown));
        }
        if real.is_dir() {
            return if real.join(INDEX).is_file() { Ok(Found::Directory) } else { Err(Refused::Missing(shown)) };
        }
        if !real.is_file() {
            return Err(Refused::Missing(shown));
        }
        Ok(Found::File(real))
    }
}

/// One path segment, percent-decoded; refused when the escape is broken, the text is not UTF-8,
/// or it names the current or parent directory or holds a separator.
fn decode_segment(raw: &str) -> Result<String, String> {
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or("the path has a broken % escape")?;
            decoded.push(byte);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    let segment = String::from_utf8(decoded).map_err(|_| "the path is not UTF-8 once decoded")?;
    if segment == "." || segment == ".." {
        return Err("the path may not contain . or .. segments".into());
    }
    if segment.contains(['/', '\\', '\0']) {
        return Err("the path may not contain an encoded /, a \\ or a NUL".into());
    }
    Ok(segment)
}

/// The `Content-Type` of a file, by its extension; unknown ones are bytes, which browsers never
/// run as a script or page (with `nosniff`).
pub fn content_type(path: &Path) -> &'static str {
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match extension.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "txt" | "md" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        _ => "application/octet-stream",
    }
}

/// Answers a `GET` or `HEAD` of a static file; other methods get `405`.
pub async fn serve(req: &HttpRequest, files: &StaticFiles) -> Result<HttpResponse, ApiError> {
    match *req.method() {
        Method::GET | Method::HEAD => {}
        ref other => return Err(ApiError::MethodNotAllowed { method: other.to_string(), allow: "GET, HEAD" }),
    }
    // The lookup and the open touch the file system: off the request threads, together.
    let (files, raw) = (files.clone(), req.uri().path().to_owned());
    let looked_up = web::block(move || {
        files.resolve(&raw).map(|found| match found {
            Found::File(path) => {
                let kind = content_type(&path);
                Some(std::fs::File::open(&path).and_then(|f| f.metadata().map(|m| (f, m.len(), kind))))
            }
            Found::Directory => None,
        })
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the task reading a static file failed: {e}")))?;
    let (file, len, kind) = match looked_up {
        Ok(Some(opened)) => opened.map_err(|e| ApiError::Internal(format!("cannot read a static file: {e}")))?,
        Ok(None) => {
            // The path was checked: it starts with one `/` only, so the redirect stays on this
            // server (`//host/...` would send the browser elsewhere, and is refused above).
            let query = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
            let location = format!("{}/{query}", req.uri().path());
            return Ok(HttpResponse::MovedPermanently().insert_header((header::LOCATION, location)).finish());
        }
        Err(Refused::Invalid(why)) => return Err(ApiError::InvalidPath(why)),
        Err(Refused::Missing(path)) => return Err(ApiError::NotFound(format!("no file is served at {path}"))),
    };
    let mut answer = HttpResponse::Ok();
    answer
        .content_type(kind)
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        // Revalidated on every load, so a deployed new version of the app is used at once.
        .insert_header((header::CACHE_CONTROL, "no-cache"));
    // HEAD gets the same answer: the HTTP layer sends its headers (Content-Length included) and
    // never reads the body.
    Ok(answer.body(SizedStream::new(len, chunks(file))))
}

/// The file's bytes, read off the request threads one chunk at a time, so that a large file
/// costs one chunk of memory per answer.
fn chunks(file: std::fs::File) -> impl futures_util::Stream<Item = Result<bytes::Bytes, actix_web::Error>> + 'static {
    futures_util::stream::try_unfold(Some(file), |file| async move {
        let Some(mut file) = file else { return Ok(None) };
        let (file, chunk) = web::block(move || {
            let mut chunk = vec![0; CHUNK_BYTES];
            let read = file.read(&mut chunk)?;
            chunk.truncate(read);
            Ok::<_, std::io::Error>((file, chunk))
        })
        .await
        .map_err(actix_web::error::ErrorInternalServerError)?
        .map_err(actix_web::error::ErrorInternalServerError)?;
        if chunk.is_empty() { Ok(None) } else { Ok(Some((bytes::Bytes::from(chunk), Some(file)))) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> (tempfile::TempDir, StaticFiles) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("site/sub")).unwrap();
        std::fs::write(dir.path().join("site/index.html"), "<p>home</p>").unwrap();
        std::fs::write(dir.path().join("site/app.js"), "1").unwrap();
        std::fs::write(dir.path().join("site/sub/index.html"), "sub").unwrap();
        std::fs::write(dir.path().join("site/.secret"), "no").unwrap();
        std::fs::write(dir.path().join("outside.txt"), "no").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(dir.path().join("outside.txt"), dir.path().join("site/link.txt")).unwrap();
        let files = StaticFiles::open(&dir.path().join("site")).unwrap();
        (dir, files)
    }

    #[test]
    fn files_and_directories_resolve_inside_the_root() {
        let (_dir, files) = site();
        let file = |p: &str| match files.resolve(p) {
            Ok(Found::File(path)) => path.file_name().unwrap().to_string_lossy().into_owned(),
            other => panic!("{p}: {other:?}"),
        };
        assert_eq!(file("/"), "index.html");
        assert_eq!(file("/app.js"), "app.js");
        assert_eq!(file("/%61pp.js"), "app.js", "escapes are decoded");
        assert_eq!(file("/sub/"), "index.html");
        assert_eq!(files.resolve("/sub"), Ok(Found::Directory));
    }

    #[test]
    fn paths_that_try_to_leave_are_invalid() {
        let (_dir, files) = site();
        for bad in [
            "/../outside.txt",
            "/sub/../../outside.txt",
            "/%2e%2e/outside.txt",
            "/%2E%2e/outside.txt",
            "/.%2e/outside.txt",
            "/..%2foutside.txt",
            "/..%2Foutside.txt",
            "/..%5coutside.txt",
            "/sub/%2e",
            "/app.js%00.png",
            "/a%zz",
            "/a%2",
            "/%ff",
            "//etc/passwd",
            "relative",
        ] {
            assert!(matches!(files.resolve(bad), Err(Refused::Invalid(_))), "{bad}: {:?}", files.resolve(bad));
        }
        let long = format!("/{}", "a".repeat(MAX_PATH_BYTES));
        assert!(matches!(files.resolve(&long), Err(Refused::Invalid(m)) if m.contains("longer")));
    }

    #[test]
    fn hidden_missing_and_escaping_links_are_not_found() {
        let (_dir, files) = site();
        for absent in ["/.secret", "/sub/.git", "/nothing.js", "/app.js/x"] {
            assert!(matches!(files.resolve(absent), Err(Refused::Missing(_))), "{absent}");
        }
        #[cfg(unix)]
        assert!(matches!(files.resolve("/link.txt"), Err(Refused::Missing(_))), "a link out of the root");
    }

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type(Path::new("a.HTML")), "text/html; charset=utf-8");
        assert_eq!(content_type(Path::new("a.js")), "text/javascript; charset=utf-8");
        assert_eq!(content_type(Path::new("a.css")), "text/css; charset=utf-8");
        assert_eq!(content_type(Path::new("a")), "application/octet-stream");
        assert_eq!(content_type(Path::new("a.exe")), "application/octet-stream");
    }
}
