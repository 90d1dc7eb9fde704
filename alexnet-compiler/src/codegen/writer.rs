//! A small indenting writer over `fmt::Write`: codegen's only formatting tool.

use std::fmt::Write;

/// Accumulates WGSL text with indentation.
#[derive(Default)]
pub struct Writer {
    out: String,
    indent: usize,
}

impl Writer {
    /// Writes one line at the current indentation.
    pub fn line(&mut self, text: impl AsRef<str>) -> &mut Self {
        let text = text.as_ref();
        if !text.is_empty() {
            for _ in 0..self.indent {
                self.out.push_str("    ");
            }
            self.out.push_str(text);
        }
        self.out.push('\n');
        self
    }

    /// Writes a `const NAME: u32 = value;` line.
    pub fn const_u32(&mut self, name: &str, value: u64) -> &mut Self {
        self.line(format!("const {name}: u32 = {value}u;"))
    }

    /// Writes a `const NAME: f32 = value;` line; the value round-trips exactly.
    pub fn const_f32(&mut self, name: &str, value: f32) -> &mut Self {
        self.line(format!("const {name}: f32 = {value:?};"))
    }

    /// Opens a block: writes `head {` and indents.
    pub fn open(&mut self, head: impl AsRef<str>) -> &mut Self {
        self.line(format!("{} {{", head.as_ref()));
        self.indent += 1;
        self
    }

    /// Opens a bare block (`{`), for names local to it.
    pub fn block(&mut self) -> &mut Self {
        self.line("{");
        self.indent += 1;
        self
    }

    /// Closes a block.
    pub fn close(&mut self) -> &mut Self {
        self.indent -= 1;
        self.line("}")
    }

    /// Appends preformatted text (a fragment) verbatim.
    pub fn raw(&mut self, text: &str) -> &mut Self {
        let _ = write!(self.out, "{text}");
        self
    }

    pub fn finish(self) -> String {
        self.out
    }
}
