//! `application/x-www-form-urlencoded` bodies read strictly: a field whose
//! bytes are not UTF-8 is an error naming the field, never text with
//! U+FFFD in it (which would record `Jos�` as who made a change).

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("form field `{0}` is not valid UTF-8")]
    NotUtf8(String),
    #[error("a form field's name is not valid UTF-8")]
    NameNotUtf8,
}

/// The fields of a form body, in order, names and values decoded (`+` is a
/// space, `%XX` a byte; a `%` not followed by two hex digits stays).
pub fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, FormError> {
    let mut out = Vec::new();
    for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        let name = String::from_utf8(decode(name)).map_err(|_| FormError::NameNotUtf8)?;
        let value = String::from_utf8(decode(value)).map_err(|_| FormError::NotUtf8(name.clone()))?;
        out.push((name, value));
    }
    Ok(out)
}

fn decode(bytes: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_decode_and_bytes_that_are_not_utf8_name_their_field() {
        let form = parse_form(b"payload=%7B%22a%22%3A+1%7D&who=Jos%C3%A9&empty=&flag&pct=100%&pct2=%4").expect("form");
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("payload"), Some("{\"a\": 1}"));
        assert_eq!(get("who"), Some("José"));
        assert_eq!((get("empty"), get("flag")), (Some(""), Some("")));
        assert_eq!((get("pct"), get("pct2")), (Some("100%"), Some("%4")));
        assert_eq!(parse_form(b"author=Jos%E9&x=1"), Err(FormError::NotUtf8("author".into())));
        assert_eq!(parse_form(b"a%FF=1"), Err(FormError::NameNotUtf8));
    }
}
