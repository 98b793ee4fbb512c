//! Printing the model back as canonical vsipioctl text (the form `getrules` / `getaddrsets` show).

use std::fmt;

use crate::model::*;

impl fmt::Display for RuleDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuleDir::In => "in",
            RuleDir::Out => "out",
            RuleDir::InOut => "inout",
        })
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.name(), self) {
            (Some(n), _) => f.write_str(n),
            (None, Protocol::Number(n)) => write!(f, "{n}"),
            (None, Protocol::Any) => f.write_str("any"),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Any => f.write_str("any"),
            Endpoint::AddrSet { id, negated } => write!(f, "{}addrset {id}", not(*negated)),
            Endpoint::Ip { net, negated } => write!(f, "{}ip {net}", not(*negated)),
        }
    }
}

impl fmt::Display for MacEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MacEndpoint::Any => f.write_str("any"),
            MacEndpoint::AddrSet { id, negated } => write!(f, "{}addrset {id}", not(*negated)),
        }
    }
}

fn not(negated: bool) -> &'static str {
    if negated {
        "not "
    } else {
        ""
    }
}

fn port_range(f: &mut fmt::Formatter<'_>, (lo, hi): (u16, u16)) -> fmt::Result {
    if lo == hi {
        write!(f, "{lo}")
    } else {
        write!(f, "{lo}-{hi}")
    }
}

impl fmt::Display for Ports {
    /// ` port ...` with a leading space, or nothing for [`Ports::Any`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ports::Any => Ok(()),
            Ports::Range(lo, hi) => {
                f.write_str(" port ")?;
                port_range(f, (*lo, *hi))
            }
            Ports::Set(items) => {
                f.write_str(" port {")?;
                for (i, r) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    port_range(f, *r)?;
                }
                f.write_str("}")
            }
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.internal {
            f.write_str("# internal # ")?;
        }
        write!(f, "rule {} at {} {}", self.id, self.position, self.dir)?;
        match &self.body {
            RuleBody::Ip(m) => {
                match m.family {
                    Family::Any => {}
                    Family::Inet => f.write_str(" inet")?,
                    Family::Inet6 => f.write_str(" inet6")?,
                }
                write!(f, " protocol {}", m.proto)?;
                if self.stateless {
                    f.write_str(" stateless")?;
                }
                if m.strict {
                    f.write_str(" strict")?;
                }
                match m.icmp {
                    IcmpMatch::Any => {}
                    IcmpMatch::Type(t) => write!(f, " icmptype {t}")?,
                    IcmpMatch::TypeCode(t, c) => write!(f, " typecode {t}:{c}")?,
                }
                write!(f, " from {}{} to {}{}", m.src, m.sport, m.dst, m.dport)?;
            }
            RuleBody::Ether(m) => {
                match m.ethertype {
                    None => f.write_str(" ethertype any")?,
                    Some(t) => write!(f, " ethertype 0x{t:04x}")?,
                }
                if self.stateless {
                    f.write_str(" stateless")?;
                }
                write!(f, " from {} to {}", m.src, m.dst)?;
            }
        }
        write!(f, " {}", self.action.as_str())?;
        if self.log {
            f.write_str(" with log")?;
        }
        if let Some(tag) = &self.tag {
            write!(f, " tag '{tag}'")?;
        }
        f.write_str(";")
    }
}

impl fmt::Display for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_comments(f, "", &self.comments)?;
        writeln!(f, "ruleset {} {{", self.name)?;
        if let Some(g) = self.generation {
            writeln!(f, "  # generation number: {g}")?;
        }
        if let Some(r) = &self.realized {
            writeln!(f, "  # realization time : {r}")?;
        }
        for rule in &self.rules {
            write_comments(f, "  ", &rule.comments)?;
            writeln!(f, "  {rule}")?;
        }
        write_comments(f, "  ", &self.trailing)?;
        f.write_str("}\n")
    }
}

impl fmt::Display for AddrSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_comments(f, "", &self.comments)?;
        writeln!(f, "addrset {} {{", self.id)?;
        if let Some(g) = self.generation {
            writeln!(f, "# generation number: {g}")?;
        }
        if let Some(r) = &self.realized {
            writeln!(f, "# realization time : {r}")?;
        }
        let mut notes = self.entry_comments.iter().peekable();
        for (i, e) in self.entries.iter().enumerate() {
            while let Some((_, c)) = notes.next_if(|(at, _)| *at <= i) {
                write_comments(f, "", std::slice::from_ref(c))?;
            }
            match e {
                AddrEntry::Ip(n) => writeln!(f, "ip {n},")?,
                AddrEntry::Mac(m) => writeln!(f, "mac {m},")?,
            }
        }
        for (_, c) in notes {
            write_comments(f, "", std::slice::from_ref(c))?;
        }
        f.write_str("}\n")
    }
}

/// Writes comment lines (`# text`) with `indent`.
pub(crate) fn write_comments(
    f: &mut std::fmt::Formatter<'_>,
    indent: &str,
    comments: &[String],
) -> std::fmt::Result {
    for c in comments {
        if c.is_empty() {
            writeln!(f, "{indent}#")?;
        } else {
            writeln!(f, "{indent}# {c}")?;
        }
    }
    Ok(())
}
