//! Compile errors: a user's mistake with the span it points at, or an internal compiler error.

use proc_macro2::Span;
use std::fmt;

/// One error, pointing at the DSL tokens it is about.
#[derive(Clone, Debug)]
pub struct Error {
    /// Where in the DSL the error points.
    pub span: Span,
    /// Lowercase message without a trailing period, saying what was expected.
    pub message: String,
}

impl Error {
    /// A new error at `span`.
    pub fn new(span: Span, message: impl Into<String>) -> Self {
        Error {
            span,
            message: message.into(),
        }
    }

    /// Line and column (1-based) of the span's start, when spans carry locations
    /// (always outside a proc macro, as in `alexnet compile FILE`).
    pub fn line_col(&self) -> (usize, usize) {
        let start = self.span.start();
        (start.line, start.column + 1)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<syn::Error> for Error {
    fn from(e: syn::Error) -> Self {
        Error::new(e.span(), e.to_string())
    }
}

/// Every error one compilation found; never empty.
#[derive(Clone, Debug)]
pub struct Errors(pub Vec<Error>);

impl Errors {
    /// These errors after `earlier` ones, in source order of discovery.
    pub fn after(self, earlier: &[Error]) -> Errors {
        let mut all = earlier.to_vec();
        all.extend(self.0);
        Errors(all)
    }

    /// Renders every error as `file:line:col: error: message`, one per line.
    pub fn render(&self, file: &str) -> String {
        let mut out = String::new();
        for e in &self.0 {
            let (line, col) = e.line_col();
            out.push_str(&format!("{file}:{line}:{col}: error: {}\n", e.message));
        }
        out
    }
}

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Errors {}

/// Collects errors from a pass that keeps going after the first one.
#[derive(Default)]
pub(crate) struct Sink(pub Vec<Error>);

impl Sink {
    pub fn push(&mut self, span: Span, message: impl Into<String>) {
        self.0.push(Error::new(span, message));
    }

    /// `Ok(value)` when nothing was reported, else every error.
    pub fn finish<T>(self, value: T) -> Result<T, Errors> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(Errors(self.0))
        }
    }
}
