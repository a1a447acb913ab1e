//! Integer box expressions of the image size: `w`, `h` and `s = min(w, h)`.
//!
//! The CPIA standard's crops (the centred square, the four microscope-field
//! crops of DataBiox and the P. falciparum / vivax / uninfected collections)
//! are integer arithmetic on the image size, so a recipe writes them as
//! expressions such as `(w - s) / 2` or `s / 7 + 4 * (s / 14)` instead of code.
//!
//! Grammar (usual precedence, left-associative):
//! `expr := term (('+' | '-') term)*`, `term := unary (('*' | '/' | '%') unary)*`,
//! `unary := '-' unary | atom`, `atom := INT | w | h | s | min(expr, expr) | max(expr, expr) | '(' expr ')'`.
//! `/` is floor division (Python's `//`), so the standard's `floor(...)` is the default.

use std::fmt;

/// Longest accepted expression text, in bytes.
pub const MAX_EXPR_LEN: usize = 256;

/// A parsed box expression. Equality and hashing use the canonical form, so
/// `(w-s)/2` and `( w - s ) / 2` are the same parameter in a cache key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BoxExpr {
    node: Node,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Node {
    Int(i64),
    Var(Var),
    Neg(Box<Node>),
    Bin(Box<Node>, BinOp, Box<Node>),
    Call(Func, Box<Node>, Box<Node>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Var {
    W,
    H,
    S,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Func {
    Min,
    Max,
}

/// A syntax error at a byte offset of the expression text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExprError {
    /// Byte offset into the expression string.
    pub offset: usize,
    pub message: String,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at offset {})", self.message, self.offset)
    }
}

impl BoxExpr {
    /// Parses `text`; errors carry the byte offset of the offending token.
    /// Texts longer than [`MAX_EXPR_LEN`] are refused, which also bounds the
    /// nesting (and so the recursion of parsing, evaluating and printing).
    pub fn parse(text: &str) -> Result<BoxExpr, ExprError> {
        if text.len() > MAX_EXPR_LEN {
            return Err(ExprError {
                offset: MAX_EXPR_LEN,
                message: format!(
                    "expression longer than {MAX_EXPR_LEN} characters (the standard's longest crop is 40)"
                ),
            });
        }
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        let node = p.expr()?;
        p.ws();
        if p.i != p.s.len() {
            return Err(p.err("unexpected text after the expression"));
        }
        Ok(BoxExpr { node })
    }

    /// A constant expression.
    pub fn constant(v: i64) -> BoxExpr {
        BoxExpr { node: Node::Int(v) }
    }

    /// Evaluates for an image of `w`×`h`. Fails on division by zero or overflow.
    pub fn eval(&self, w: i64, h: i64) -> Result<i64, String> {
        eval(&self.node, w, h, w.min(h))
    }

    /// The canonical text (fully parenthesised binary operations, no spaces):
    /// what goes into cache keys and is shown by `plan --explain`.
    pub fn canonical(&self) -> String {
        let mut out = String::new();
        write_node(&self.node, &mut out);
        out
    }
}

impl fmt::Display for BoxExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

fn eval(n: &Node, w: i64, h: i64, s: i64) -> Result<i64, String> {
    Ok(match n {
        Node::Int(v) => *v,
        Node::Var(Var::W) => w,
        Node::Var(Var::H) => h,
        Node::Var(Var::S) => s,
        Node::Neg(a) => eval(a, w, h, s)?.checked_neg().ok_or("integer overflow")?,
        Node::Bin(a, op, b) => {
            let (a, b) = (eval(a, w, h, s)?, eval(b, w, h, s)?);
            match op {
                BinOp::Add => a.checked_add(b).ok_or("integer overflow")?,
                BinOp::Sub => a.checked_sub(b).ok_or("integer overflow")?,
                BinOp::Mul => a.checked_mul(b).ok_or("integer overflow")?,
                BinOp::Div | BinOp::Rem if b == 0 => return Err("division by zero".into()),
                BinOp::Div => a.div_euclid(b) - i64::from(b < 0 && a.rem_euclid(b) != 0),
                BinOp::Rem => a - b * (a.div_euclid(b) - i64::from(b < 0 && a.rem_euclid(b) != 0)),
            }
        }
        Node::Call(Func::Min, a, b) => eval(a, w, h, s)?.min(eval(b, w, h, s)?),
        Node::Call(Func::Max, a, b) => eval(a, w, h, s)?.max(eval(b, w, h, s)?),
    })
}

fn write_node(n: &Node, out: &mut String) {
    match n {
        Node::Int(v) => out.push_str(&v.to_string()),
        Node::Var(Var::W) => out.push('w'),
        Node::Var(Var::H) => out.push('h'),
        Node::Var(Var::S) => out.push('s'),
        Node::Neg(a) => {
            out.push_str("-(");
            write_node(a, out);
            out.push(')');
        }
        Node::Bin(a, op, b) => {
            out.push('(');
            write_node(a, out);
            out.push(match op {
                BinOp::Add => '+',
                BinOp::Sub => '-',
                BinOp::Mul => '*',
                BinOp::Div => '/',
                BinOp::Rem => '%',
            });
            write_node(b, out);
            out.push(')');
        }
        Node::Call(f, a, b) => {
            out.push_str(match f {
                Func::Min => "min(",
                Func::Max => "max(",
            });
            write_node(a, out);
            out.push(',');
            write_node(b, out);
            out.push(')');
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn err(&self, message: &str) -> ExprError {
        ExprError {
            offset: self.i,
            message: message.to_string(),
        }
    }

    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expr(&mut self) -> Result<Node, ExprError> {
        let mut lhs = self.term()?;
        loop {
            let op = if self.eat(b'+') {
                BinOp::Add
            } else if self.eat(b'-') {
                BinOp::Sub
            } else {
                return Ok(lhs);
            };
            let rhs = self.term()?;
            lhs = Node::Bin(Box::new(lhs), op, Box::new(rhs));
        }
    }

    fn term(&mut self) -> Result<Node, ExprError> {
        let mut lhs = self.unary()?;
        loop {
            let op = if self.eat(b'*') {
                BinOp::Mul
            } else if self.eat(b'/') {
                // `//` is accepted as a synonym, since the standard is written in Python.
                self.eat(b'/');
                BinOp::Div
            } else if self.eat(b'%') {
                BinOp::Rem
            } else {
                return Ok(lhs);
            };
            let rhs = self.unary()?;
            lhs = Node::Bin(Box::new(lhs), op, Box::new(rhs));
        }
    }

    fn unary(&mut self) -> Result<Node, ExprError> {
        if self.eat(b'-') {
            return Ok(Node::Neg(Box::new(self.unary()?)));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Node, ExprError> {
        self.ws();
        let start = self.i;
        match self.s.get(self.i) {
            None => Err(self.err("expected a number, `w`, `h`, `s`, `min(..)`, `max(..)` or `(`")),
            Some(b'(') => {
                self.i += 1;
                let n = self.expr()?;
                if !self.eat(b')') {
                    return Err(self.err("expected `)`"));
                }
                Ok(n)
            }
            Some(c) if c.is_ascii_digit() => {
                while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                    self.i += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
                text.parse::<i64>().map(Node::Int).map_err(|_| ExprError {
                    offset: start,
                    message: "integer too large".into(),
                })
            }
            Some(c) if c.is_ascii_alphabetic() => {
                while self.i < self.s.len() && self.s[self.i].is_ascii_alphanumeric() {
                    self.i += 1;
                }
                let word = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
                match word {
                    "w" => Ok(Node::Var(Var::W)),
                    "h" => Ok(Node::Var(Var::H)),
                    "s" => Ok(Node::Var(Var::S)),
                    "min" | "max" => {
                        let f = if word == "min" { Func::Min } else { Func::Max };
                        if !self.eat(b'(') {
                            return Err(self.err("expected `(` after the function name"));
                        }
                        let a = self.expr()?;
                        if !self.eat(b',') {
                            return Err(self.err("expected `,`: min and max take two arguments"));
                        }
                        let b = self.expr()?;
                        if !self.eat(b')') {
                            return Err(self.err("expected `)`"));
                        }
                        Ok(Node::Call(f, Box::new(a), Box::new(b)))
                    }
                    _ => Err(ExprError {
                        offset: start,
                        message: format!(
                            "unknown name `{word}`: only `w`, `h`, `s`, `min` and `max` are defined"
                        ),
                    }),
                }
            }
            Some(_) => Err(self.err("unexpected character")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: &str, w: i64, h: i64) -> i64 {
        BoxExpr::parse(t).unwrap().eval(w, h).unwrap()
    }

    #[test]
    fn centre_square() {
        assert_eq!(ev("(w - s) / 2", 956, 779), 88);
        assert_eq!(ev("(h - s) / 2", 956, 779), 0);
        assert_eq!(ev("s", 956, 779), 779);
    }

    #[test]
    fn microscope_field_crops_match_the_standard() {
        // P. vivax: left floor(s/7) + 4d, top floor(s/7) + d, side a - 2d.
        let (w, h) = (1600, 1200);
        let s = 1200;
        let a = 5 * s / 7;
        let d = s / 14;
        assert_eq!(ev("s/7 + 4*(s/14)", w, h), s / 7 + 4 * d);
        assert_eq!(ev("5*s/7 - 2*(s/14)", w, h), a - 2 * d);
        assert_eq!(ev("5*s//7 - 4*(s/14)", w, h), a - 4 * d);
    }

    #[test]
    fn floor_division_and_precedence() {
        assert_eq!(ev("-7 / 2", 1, 1), -4);
        assert_eq!(ev("1 + 2 * 3", 1, 1), 7);
        assert_eq!(ev("min(w, h) - max(1, 2)", 5, 9), 3);
        assert_eq!(ev("7 % 3", 1, 1), 1);
    }

    #[test]
    fn canonical_form_ignores_spacing() {
        let a = BoxExpr::parse("(w-s)/2").unwrap();
        let b = BoxExpr::parse(" ( w - s ) / 2 ").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.canonical(), "((w-s)/2)");
    }

    #[test]
    fn errors_have_offsets() {
        let e = BoxExpr::parse("w + q").unwrap_err();
        assert_eq!(e.offset, 4);
        let e = BoxExpr::parse("(w + 1").unwrap_err();
        assert_eq!(e.offset, 6);
        assert!(BoxExpr::parse("w / 0").unwrap().eval(3, 3).is_err());
    }
}
