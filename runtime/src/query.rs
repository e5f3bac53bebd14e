//! Percent-decoding of a request's query parameters and path segments.

/// A request's query parameters, percent-decoded (`+` is a space).
#[derive(Debug, Default)]
pub(crate) struct Query(Vec<(String, Result<String, ()>)>);

impl Query {
    pub(crate) fn parse(query: Option<&str>) -> Self {
        let pairs = query
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .filter_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let key = percent_decode(k, true)?;
                Some((key, percent_decode(v, true).ok_or(())))
            })
            .collect();
        Self(pairs)
    }

    /// The first value of `key`: `Err` when it is not valid percent-encoded
    /// UTF-8.
    pub(crate) fn get(&self, key: &str) -> Option<Result<&str, ()>> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_deref().map_err(|&()| ()))
    }
}

/// A path segment, percent-decoded (`+` stays a `+`); `None` for a bad
/// escape or bytes that are not UTF-8.
pub(crate) fn decode_path(segment: &str) -> Option<String> {
    percent_decode(segment, false)
}

/// Percent-decodes `s` (and `+` as a space when `plus_is_space`); `None`
/// for a bad escape or bytes that are not UTF-8.
fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    if !s.contains(['%', '+']) {
        return Some(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = Query::parse(Some("a=1&b=x%3Ay&c=a+b&d=%zz&e&=f&b=2"));
        assert_eq!(q.get("a"), Some(Ok("1")));
        assert_eq!(q.get("b"), Some(Ok("x:y")), "the first value counts");
        assert_eq!(q.get("c"), Some(Ok("a b")));
        assert_eq!(q.get("d"), Some(Err(())));
        assert_eq!(q.get("e"), Some(Ok("")));
        assert_eq!(q.get("zz"), None);
        assert_eq!(Query::parse(None).get("a"), None);
        assert_eq!(percent_decode("%E2%9C%93", false).as_deref(), Some("✓"));
        assert_eq!(percent_decode("%FF", false), None);
        assert_eq!(percent_decode("a+b", false).as_deref(), Some("a+b"));
        assert_eq!(percent_decode("%4", false), None);
    }
}
