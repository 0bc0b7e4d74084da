//! A strict little JSON reader for the tests: it checks that what the
//! launcher prints really is JSON, and gives typed access that panics with
//! the value in view when the shape is not what a test expects.

#[derive(Debug, Clone, PartialEq)]
pub enum J {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    pub fn get(&self, key: &str) -> &J {
        match self {
            J::Obj(fields) => fields
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .unwrap_or_else(|| panic!("no key {key} in {self:?}")),
            _ => panic!("not an object: {self:?}"),
        }
    }
    pub fn str(&self) -> &str {
        match self {
            J::Str(s) => s,
            _ => panic!("not a string: {self:?}"),
        }
    }
    pub fn num(&self) -> f64 {
        match self {
            J::Num(n) => *n,
            _ => panic!("not a number: {self:?}"),
        }
    }
    pub fn arr(&self) -> &[J] {
        match self {
            J::Arr(a) => a,
            _ => panic!("not an array: {self:?}"),
        }
    }
}

pub fn parse_json(text: &str) -> J {
    let mut p = JsonReader {
        s: text.as_bytes(),
        i: 0,
    };
    let v = p.value();
    p.ws();
    assert_eq!(p.i, p.s.len(), "trailing text after JSON: {text}");
    v
}

struct JsonReader<'a> {
    s: &'a [u8],
    i: usize,
}

impl JsonReader<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && b" \t\r\n".contains(&self.s[self.i]) {
            self.i += 1;
        }
    }
    fn eat(&mut self, lit: &str) -> bool {
        if self.s[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }
    fn expect(&mut self, b: u8) {
        self.ws();
        assert_eq!(
            self.s.get(self.i),
            Some(&b),
            "expected {:?} at byte {}",
            b as char,
            self.i
        );
        self.i += 1;
    }
    fn value(&mut self) -> J {
        self.ws();
        match self.s.get(self.i) {
            Some(b'{') => {
                self.i += 1;
                let mut fields = Vec::new();
                self.ws();
                if !self.eat("}") {
                    loop {
                        self.ws();
                        let k = self.string();
                        self.expect(b':');
                        fields.push((k, self.value()));
                        self.ws();
                        if self.eat("}") {
                            break;
                        }
                        self.expect(b',');
                    }
                }
                J::Obj(fields)
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if !self.eat("]") {
                    loop {
                        items.push(self.value());
                        self.ws();
                        if self.eat("]") {
                            break;
                        }
                        self.expect(b',');
                    }
                }
                J::Arr(items)
            }
            Some(b'"') => J::Str(self.string()),
            _ if self.eat("null") => J::Null,
            _ if self.eat("true") => J::Bool(true),
            _ if self.eat("false") => J::Bool(false),
            _ => {
                let start = self.i;
                while self.i < self.s.len() && b"-+.eE0123456789".contains(&self.s[self.i]) {
                    self.i += 1;
                }
                let n = std::str::from_utf8(&self.s[start..self.i]).unwrap();
                J::Num(
                    n.parse()
                        .unwrap_or_else(|_| panic!("bad JSON value at byte {start}")),
                )
            }
        }
    }
    fn string(&mut self) -> String {
        self.expect(b'"');
        let mut out = Vec::new();
        loop {
            let b = *self.s.get(self.i).expect("unterminated string");
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let e = self.s[self.i];
                    self.i += 1;
                    match e {
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'u' => {
                            let hex = std::str::from_utf8(&self.s[self.i..self.i + 4]).unwrap();
                            let c = u32::from_str_radix(hex, 16).expect("bad \\u escape");
                            self.i += 4;
                            let mut buf = [0; 4];
                            out.extend_from_slice(
                                char::from_u32(c)
                                    .expect("surrogates are not expected here")
                                    .encode_utf8(&mut buf)
                                    .as_bytes(),
                            );
                        }
                        _ => panic!("bad escape \\{}", e as char),
                    }
                }
                0..=0x1f => panic!("raw control character {b:#x} in a JSON string"),
                _ => out.push(b),
            }
        }
        String::from_utf8(out).expect("JSON strings are UTF-8")
    }
}
