//! A service's output cut into lines for the console: bytes are kept until
//! a newline; a line longer than the buffer goes out in pieces of the
//! buffer's size, and what is left at the end is flushed as a line.

/// Longest piece written as one console line (without prefix or newline).
pub const MAX: usize = 1024;

pub struct Lines {
    buf: [u8; MAX],
    len: usize,
}

impl Default for Lines {
    fn default() -> Lines {
        Lines {
            buf: [0; MAX],
            len: 0,
        }
    }
}

impl Lines {
    /// Adds `input`; calls `emit` with each line completed (newline not
    /// included) or each full buffer.
    pub fn feed(&mut self, input: &[u8], mut emit: impl FnMut(&[u8])) {
        for &b in input {
            if b == b'\n' {
                emit(self.buf.get(..self.len).unwrap_or_default());
                self.len = 0;
                continue;
            }
            if self.len == MAX {
                emit(&self.buf);
                self.len = 0;
            }
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
    }

    /// Emits an unfinished last line, if any.
    pub fn flush(&mut self, mut emit: impl FnMut(&[u8])) {
        if self.len > 0 {
            emit(self.buf.get(..self.len).unwrap_or_default());
            self.len = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn run(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut l = Lines::default();
        let mut out = Vec::new();
        for c in chunks {
            l.feed(c, |line| out.push(line.to_vec()));
        }
        l.flush(|line| out.push(line.to_vec()));
        out
    }

    #[test]
    fn lines_across_reads_and_a_partial_last_one() {
        let out = run(&[b"ab", b"c\nde\n\nf", b"g"]);
        assert_eq!(out, [&b"abc"[..], b"de", b"", b"fg"]);
    }

    #[test]
    fn a_long_line_is_split_never_lost() {
        let long = [b'x'; MAX * 2 + 5];
        let mut input = long.to_vec();
        input.push(b'\n');
        let out = run(&[&input]);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].len(), MAX);
        assert_eq!(out[1].len(), MAX);
        assert_eq!(out[2].len(), 5);
        // Exactly a buffer's worth and a newline is one line, no empty one.
        let mut exact = [b'y'; MAX].to_vec();
        exact.push(b'\n');
        assert_eq!(run(&[&exact]).len(), 1);
    }
}
