//! `file:` URIs on the wire, native absolute paths inside. Every path and cwd a client sends is a
//! percent-encoded `file:` URI interpreted with this executor's (Linux) path rules.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

/// Why a string is not a usable `file:` URI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathUriError {
    #[error("'{0}' is not a file: URI")]
    NotFileScheme(String),
    #[error("'{0}' is not an absolute file: URI")]
    Relative(String),
    #[error("'{0}' names a remote host; only local file: URIs are accepted")]
    RemoteHost(String),
    #[error("'{0}' is invalid on 'linux'")]
    ForeignShape(String),
    #[error("'{0}' contains a NUL byte")]
    Nul(String),
    #[error("'{0}' has a query or fragment; a file: URI names a path and nothing else")]
    QueryOrFragment(String),
    #[error("'{uri}' contains '..' and {path} does not exist")]
    UnresolvedParent { uri: String, path: String },
}

/// Characters escaped when turning a path into a URI: controls, space, and URI delimiters.
const PATH_ESCAPES: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// Parses `file:///abs/path` (or `file://localhost/abs/path`) into a native absolute path, with
/// any `..` left as it is (see [`to_path`]).
pub fn to_unresolved_path(uri: &str) -> Result<PathBuf, PathUriError> {
    let Some(rest) = uri.strip_prefix("file:") else {
        return Err(PathUriError::NotFileScheme(uri.to_string()));
    };
    let Some(rest) = rest.strip_prefix("//") else {
        return Err(PathUriError::Relative(uri.to_string()));
    };
    let (host, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => return Err(PathUriError::Relative(uri.to_string())),
    };
    if !host.is_empty() && !host.eq_ignore_ascii_case("localhost") {
        return Err(PathUriError::RemoteHost(uri.to_string()));
    }
    // A query or fragment is no part of a path, and dropping it would run in another directory
    // than the one named (`file:///tmp?x=1` is not `/tmp`): refused, as the reference does. A
    // literal `?` or `#` in a file name arrives percent-encoded.
    if path.contains(['?', '#']) {
        return Err(PathUriError::QueryOrFragment(uri.to_string()));
    }
    let bytes: Vec<u8> = percent_decode_str(path).collect();
    if bytes.contains(&0) {
        return Err(PathUriError::Nul(uri.to_string()));
    }
    // `file:///C:/x` is a Windows path; on Linux it would silently mean `/C:/x`.
    if bytes.len() >= 3 && bytes[0] == b'/' && bytes[1].is_ascii_alphabetic() && bytes[2] == b':' {
        return Err(PathUriError::ForeignShape(uri.to_string()));
    }
    Ok(PathBuf::from(OsString::from_vec(bytes)))
}

/// A `file:` URI as a native absolute path; a `..` in it is resolved against the real file
/// system (the path must then exist).
pub fn to_path(uri: &str) -> Result<PathBuf, PathUriError> {
    let path = to_unresolved_path(uri)?;
    if path.components().any(|c| c == Component::ParentDir) {
        return std::fs::canonicalize(&path).map_err(|_| PathUriError::UnresolvedParent {
            uri: uri.to_string(),
            path: path.display().to_string(),
        });
    }
    Ok(path)
}

/// Turns a native absolute path into a `file:` URI.
pub fn from_path(path: &Path) -> String {
    let encoded: String = path
        .as_os_str()
        .as_bytes()
        .split(|b| *b == b'/')
        .map(|seg| {
            // Non-UTF-8 bytes are percent-encoded one by one.
            match std::str::from_utf8(seg) {
                Ok(s) => utf8_percent_encode(s, PATH_ESCAPES).to_string(),
                Err(_) => seg.iter().map(|b| format!("%{b:02X}")).collect(),
            }
        })
        .collect::<Vec<_>>()
        .join("/");
    format!("file://{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoded_space_decodes() {
        assert_eq!(
            to_path("file:///home/u/a%20b.txt").unwrap(),
            PathBuf::from("/home/u/a b.txt")
        );
    }

    #[test]
    fn localhost_host_is_local() {
        assert_eq!(
            to_path("file://localhost/tmp").unwrap(),
            PathBuf::from("/tmp")
        );
    }

    #[test]
    fn bare_relative_remote_and_foreign_paths_are_refused() {
        assert!(matches!(
            to_path("/tmp"),
            Err(PathUriError::NotFileScheme(_))
        ));
        assert!(matches!(
            to_path("http://x/tmp"),
            Err(PathUriError::NotFileScheme(_))
        ));
        assert!(matches!(
            to_path("file:tmp"),
            Err(PathUriError::Relative(_))
        ));
        assert!(matches!(
            to_path("file://host/tmp"),
            Err(PathUriError::RemoteHost(_))
        ));
        assert!(matches!(
            to_path("file:///C:/x"),
            Err(PathUriError::ForeignShape(_))
        ));
        assert!(matches!(
            to_path("file:///a%00b"),
            Err(PathUriError::Nul(_))
        ));
    }

    #[test]
    fn query_or_fragment_is_refused_but_an_encoded_one_is_a_file_name() {
        for uri in [
            "file:///tmp?x=1",
            "file:///tmp#x",
            "file:///tmp/?",
            "file://localhost/a#",
        ] {
            assert!(
                matches!(to_path(uri), Err(PathUriError::QueryOrFragment(_))),
                "{uri}"
            );
        }
        assert_eq!(
            to_path("file:///tmp/a%3Fb%23c").unwrap(),
            PathBuf::from("/tmp/a?b#c")
        );
    }

    #[test]
    fn parent_components_resolve_only_against_existing_paths() {
        assert_eq!(
            to_path("file:///usr/../tmp").unwrap(),
            std::fs::canonicalize("/tmp").unwrap()
        );
        assert!(matches!(
            to_path("file:///no-such-dir-xyz/../tmp"),
            Err(PathUriError::UnresolvedParent { .. })
        ));
    }

    #[test]
    fn paths_round_trip_through_uris() {
        for p in ["/tmp", "/home/u/a b#c%d.txt", "/"] {
            assert_eq!(
                to_path(&from_path(Path::new(p))).unwrap(),
                PathBuf::from(p),
                "{p}"
            );
        }
        assert_eq!(from_path(Path::new("/a b")), "file:///a%20b");
    }
}
