//! WWW-Authenticate parsing (RFC 7235): several challenges per header,
//! quoted values holding commas and escapes, any case and spacing.

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// Lower case: `bearer`, `basic`, `negotiate`.
    pub scheme: String,
    /// Names lower case, values as sent (unquoted).
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn is_delim(c: u8) -> bool {
    c == b',' || c == b'=' || c == b'"' || c.is_ascii_whitespace()
}

/// Parse every challenge of one header value.
pub fn parse(header: &str) -> Vec<Challenge> {
    let s = header.as_bytes();
    let mut out: Vec<Challenge> = Vec::new();
    let mut i = 0;
    let skip_ws = |mut i: usize| {
        while i < s.len() && s[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    while i < s.len() {
        if s[i] == b',' || s[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        while i < s.len() && !is_delim(s[i]) {
            i += 1;
        }
        if start == i {
            i += 1; // a stray '=' or '"': skip it
            continue;
        }
        let word = header[start..i].to_ascii_lowercase();
        let j = skip_ws(i);
        let is_param = j < s.len() && s[j] == b'=' && !out.is_empty();
        if !is_param {
            out.push(Challenge {
                scheme: word,
                params: Vec::new(),
            });
            i = j;
            continue;
        }
        i = skip_ws(j + 1);
        let value = if i < s.len() && s[i] == b'"' {
            let (v, next) = quoted(header, i + 1);
            i = next;
            v
        } else {
            let vstart = i;
            while i < s.len() && s[i] != b',' && !s[i].is_ascii_whitespace() {
                i += 1;
            }
            header[vstart..i].to_string()
        };
        if let Some(last) = out.last_mut() {
            last.params.push((word, value));
        }
    }
    out
}

/// Read a quoted-string body starting after the opening quote.
fn quoted(h: &str, mut i: usize) -> (String, usize) {
    let s = h.as_bytes();
    let mut v = Vec::new();
    while i < s.len() {
        match s[i] {
            b'\\' if i + 1 < s.len() => {
                v.push(s[i + 1]);
                i += 2;
            }
            b'"' => return (String::from_utf8_lossy(&v).into_owned(), i + 1),
            c => {
                v.push(c);
                i += 1;
            }
        }
    }
    (String::from_utf8_lossy(&v).into_owned(), i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s02_scope_with_comma_survives() {
        let c = parse(
            r#"Bearer realm="A/token",service="reg.test",scope="repository:fx/app:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].param("scope"), Some("repository:fx/app:pull,push"));
        assert_eq!(c[0].param("realm"), Some("A/token"));
    }

    #[test]
    fn s02_unquoted_and_case() {
        let c = parse(r#"Bearer realm="A",service=reg.test,scope="repository:fx/app:pull""#);
        assert_eq!(c[0].param("service"), Some("reg.test"));
        let e = parse(r#"bearer  Realm="A/token" , SERVICE="reg.test""#);
        assert_eq!(e[0].scheme, "bearer");
        assert_eq!(e[0].param("realm"), Some("A/token"));
        assert_eq!(e[0].param("service"), Some("reg.test"));
    }

    #[test]
    fn s02_several_challenges_and_escapes() {
        let c = parse(r#"Basic realm="reg.test", Bearer realm="A/token",service="s",scope="x""#);
        assert_eq!(c.len(), 2);
        assert_eq!(
            (c[0].scheme.as_str(), c[1].scheme.as_str()),
            ("basic", "bearer")
        );
        assert_eq!(c[1].param("scope"), Some("x"));
        let f = parse(concat!(
            r#"Bearer realm="A",error="invalid_token",error_description="bad \"x\", y","#,
            r#"service="reg.test",scope="repository:fx/app:pull""#
        ));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].param("error_description"), Some(r#"bad "x", y"#));
        assert_eq!(f[0].param("scope"), Some("repository:fx/app:pull"));
        assert_eq!(f[0].param("service"), Some("reg.test"));
        assert_eq!(parse("Negotiate")[0].scheme, "negotiate");
    }
}
