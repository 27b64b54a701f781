//! The header of a `.npy` file, parsed here rather than by a dependency so that hostile
//! headers (shapes whose product overflows, nesting, garbage) are errors in every build,
//! including `panic = "abort"` ones where a panic cannot be caught.
//!
//! Format (NumPy's NEP 1): the magic `\x93NUMPY`, a major and minor version, the header
//! length (`u16` in version 1, `u32` in versions 2 and 3, little endian), then a Python
//! dict literal such as `{'descr': '<f8', 'fortran_order': False, 'shape': (5, 4), }`
//! padded with spaces and a newline; the data follows.

/// What a header declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    /// The dtype string, e.g. `<f8`.
    pub descr: String,
    /// `f` (float), `i` (signed int), `u` (unsigned), `b` (bool), `c` (complex), ...
    pub type_char: char,
    /// Bytes per element (0 when the dtype has none, e.g. `O`).
    pub size: usize,
    pub big_endian: bool,
    pub fortran_order: bool,
    pub shape: Vec<usize>,
    /// Byte offset of the data.
    pub data_start: usize,
}

/// Longest header text accepted (NumPy itself writes a few hundred bytes).
pub const MAX_HEADER: usize = 1 << 20;
/// Deepest nesting of the dict literal.
const MAX_DEPTH: usize = 16;

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Str(String),
    Bool(bool),
    None,
    Int(u64),
    Seq(Vec<Value>),
    Dict(Vec<(Value, Value)>),
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        while self.at < self.s.len() && self.s[self.at].is_ascii_whitespace() {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.s.get(self.at).copied()
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.at += 1;
            Ok(())
        } else {
            Err(format!(
                "expected {:?} at byte {} of the header",
                c as char, self.at
            ))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err("the header is nested too deeply".into());
        }
        match self.peek() {
            Some(q @ (b'\'' | b'"')) => {
                self.at += 1;
                let mut out = Vec::new();
                while let Some(&c) = self.s.get(self.at) {
                    self.at += 1;
                    match c {
                        b'\\' => {
                            let e = *self.s.get(self.at).ok_or("unterminated string")?;
                            self.at += 1;
                            out.push(e);
                        }
                        c if c == q => {
                            return String::from_utf8(out)
                                .map(Value::Str)
                                .map_err(|_| "a header string is not UTF-8".to_string());
                        }
                        c => out.push(c),
                    }
                }
                Err("unterminated string in the header".into())
            }
            Some(open @ (b'(' | b'[')) => {
                self.at += 1;
                let close = if open == b'(' { b')' } else { b']' };
                let mut items = Vec::new();
                loop {
                    if self.peek() == Some(close) {
                        self.at += 1;
                        return Ok(Value::Seq(items));
                    }
                    items.push(self.value(depth + 1)?);
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(c) if c == close => {}
                        _ => return Err("malformed tuple or list in the header".into()),
                    }
                }
            }
            Some(b'{') => {
                self.at += 1;
                let mut items = Vec::new();
                loop {
                    if self.peek() == Some(b'}') {
                        self.at += 1;
                        return Ok(Value::Dict(items));
                    }
                    let k = self.value(depth + 1)?;
                    self.expect(b':')?;
                    let v = self.value(depth + 1)?;
                    items.push((k, v));
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b'}') => {}
                        _ => return Err("malformed dict in the header".into()),
                    }
                }
            }
            Some(c) if c.is_ascii_digit() => {
                let start = self.at;
                while self.at < self.s.len() && self.s[self.at].is_ascii_digit() {
                    self.at += 1;
                }
                let digits = std::str::from_utf8(&self.s[start..self.at]).expect("ASCII digits");
                if self.s.get(self.at) == Some(&b'L') {
                    self.at += 1; // Python 2 long suffix
                }
                digits
                    .parse::<u64>()
                    .map(Value::Int)
                    .map_err(|_| format!("number {digits} in the header is too large"))
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.at;
                while self.at < self.s.len() && self.s[self.at].is_ascii_alphanumeric() {
                    self.at += 1;
                }
                match &self.s[start..self.at] {
                    b"True" => Ok(Value::Bool(true)),
                    b"False" => Ok(Value::Bool(false)),
                    b"None" => Ok(Value::None),
                    other => Err(format!(
                        "unexpected {:?} in the header",
                        String::from_utf8_lossy(other)
                    )),
                }
            }
            Some(b'-') => Err("a negative number in the header".into()),
            Some(c) => Err(format!("unexpected {:?} in the header", c as char)),
            None => Err("the header ends too early".into()),
        }
    }
}

/// Parses the header at the start of `bytes`; the error is a message without the file name.
pub fn parse(bytes: &[u8]) -> Result<NpyHeader, String> {
    if bytes.len() < 8 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a valid .npy file: magic string not found".into());
    }
    let (len, start) = match bytes[6] {
        1 => {
            let b = bytes
                .get(8..10)
                .ok_or("not a valid .npy file: truncated header")?;
            (u16::from_le_bytes([b[0], b[1]]) as usize, 10)
        }
        2 | 3 => {
            let b = bytes
                .get(8..12)
                .ok_or("not a valid .npy file: truncated header")?;
            (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
        }
        v => {
            return Err(format!(
                "not a valid .npy file: unsupported format version {v}"
            ));
        }
    };
    if len > MAX_HEADER {
        return Err(format!("not a valid .npy file: header of {len} bytes"));
    }
    let text = bytes
        .get(start..start + len)
        .ok_or("not a valid .npy file: the header is truncated")?;
    let mut p = Parser { s: text, at: 0 };
    let Value::Dict(items) = p
        .value(0)
        .map_err(|e| format!("not a valid .npy file: {e}"))?
    else {
        return Err("not a valid .npy file: the header is not a dict".into());
    };
    let get = |key: &str| {
        items
            .iter()
            .find(|(k, _)| *k == Value::Str(key.to_string()))
            .map(|(_, v)| v)
    };
    let descr = match get("descr") {
        Some(Value::Str(s)) => s.clone(),
        Some(other) => {
            return Err(format!(
                "dtype {other:?} is not a plain float; expected float32 or float64"
            ));
        }
        None => return Err("not a valid .npy file: no 'descr' in the header".into()),
    };
    let fortran_order = match get("fortran_order") {
        Some(Value::Bool(b)) => *b,
        _ => return Err("not a valid .npy file: 'fortran_order' must be True or False".into()),
    };
    let shape = match get("shape") {
        Some(Value::Seq(dims)) => dims
            .iter()
            .map(|d| match d {
                Value::Int(n) => {
                    usize::try_from(*n).map_err(|_| format!("dimension {n} is too large"))
                }
                other => Err(format!("not a valid .npy file: shape entry {other:?}")),
            })
            .collect::<Result<Vec<usize>, String>>()?,
        _ => return Err("not a valid .npy file: 'shape' must be a tuple of integers".into()),
    };
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} overflows"))?;
    let d = descr.as_bytes();
    let (big_endian, rest) = match d.first() {
        Some(b'>') => (true, &d[1..]),
        Some(b'<' | b'=' | b'|') => (false, &d[1..]),
        _ => (false, d),
    };
    let type_char = rest.first().map_or('?', |&c| c as char);
    let size = std::str::from_utf8(rest.get(1..).unwrap_or(&[]))
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(0);
    Ok(NpyHeader {
        descr,
        type_char,
        size,
        big_endian,
        fortran_order,
        shape,
        data_start: start + len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dict: &str) -> Vec<u8> {
        let mut h = dict.as_bytes().to_vec();
        h.push(b'\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        out.extend_from_slice(&h);
        out
    }

    #[test]
    fn numpy_headers_parse() {
        let h = parse(&file(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (5, 4), }",
        ))
        .unwrap();
        assert_eq!(
            (h.type_char, h.size, h.big_endian, h.fortran_order),
            ('f', 8, false, false)
        );
        assert_eq!(h.shape, vec![5, 4]);
        let h = parse(&file(
            "{\"shape\": (3,), \"fortran_order\": True, \"descr\": \">i2\"}",
        ))
        .unwrap();
        assert_eq!(
            (h.type_char, h.size, h.big_endian, h.fortran_order),
            ('i', 2, true, true)
        );
        assert_eq!(
            parse(&file(
                "{'descr': '<f4', 'fortran_order': False, 'shape': ()}"
            ))
            .unwrap()
            .shape,
            Vec::<usize>::new()
        );
    }

    #[test]
    fn hostile_headers_are_errors() {
        for d in [
            "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (-5, 4), }",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999999,), }",
            "{'descr': '<f8', 'fortran_order': False}",
            "{'descr': '<f8', 'shape': (1,)}",
            "[1, 2]",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (5, 4)",
            "__import__('os')",
            &format!("{}{}", "(".repeat(100), ")".repeat(100)),
        ] {
            assert!(parse(&file(d)).is_err(), "{d}");
        }
        assert!(parse(b"\x93NUMPY\x09\x00\x00\x00").is_err());
        assert!(parse(b"\x93NUMPY\x01\x00\xff\xff{").is_err());
        assert!(parse(b"hello").is_err());
    }
}
