//! What can go wrong reading manifests and compiling them.

use std::fmt;

/// Where a problem is: file, line and column (1-based).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    /// The file (or the name the caller gave the text).
    pub file: String,
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// A manifest that cannot be read. Every variant names the file position; those about one object name
/// it as `Kind namespace/name` and, for a field, its path (`spec.ingress[0].from[1].podSelector`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The file cannot be read.
    #[error("{file}: cannot read: {message}")]
    Io {
        /// The file.
        file: String,
        /// The operating system's message.
        message: String,
    },
    /// Not well-formed YAML (or too deep / too large).
    #[error("{at}: malformed YAML: {message}")]
    Yaml {
        /// Where.
        at: Location,
        /// The parser's message.
        message: String,
    },
    /// A field of an object is wrong: unknown, of the wrong type, or with a value Kubernetes rejects.
    #[error("{at}: {object}: {path}: {message}")]
    Field {
        /// Where the field is.
        at: Location,
        /// `Kind namespace/name`.
        object: String,
        /// Path of the field inside the object.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A kind dfw does not implement (AdminNetworkPolicy, a CNI's own policy kinds, workloads without
    /// pod IPs, ...). Never ignored silently: the caller may list kinds to skip explicitly.
    #[error("{at}: {object}: kind {kind} (apiVersion {api_version}) is not implemented by dfw netpol{hint}")]
    Unsupported {
        /// Where the object starts.
        at: Location,
        /// `Kind namespace/name`.
        object: String,
        /// The kind.
        kind: String,
        /// The apiVersion as written.
        api_version: String,
        /// Extra advice (starts with `; ` when present).
        hint: String,
    },
    /// The same object twice, or two pods claiming one address.
    #[error("{at}: {object}: {message}")]
    Conflict {
        /// Where the second object starts.
        at: Location,
        /// `Kind namespace/name`.
        object: String,
        /// What it conflicts with.
        message: String,
    },
}

/// Every problem found in a set of manifests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoadErrors(pub Vec<LoadError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}

/// A cluster that cannot be compiled to filters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// The cluster name cannot be used in set and rule names.
    #[error("cluster name '{0}' must be non-empty and use only letters, digits, '.', '_' and '-'")]
    ClusterName(String),
    /// Two running pods claim one address (one address is one vNIC).
    #[error("{0}")]
    AddressClash(String),
    /// Two pods would get the same vNIC MAC address (derived from their IPs).
    #[error("pods {first} and {second} would get the same vNIC MAC {mac}")]
    MacClash {
        /// `namespace/name` of the first pod.
        first: String,
        /// `namespace/name` of the second pod.
        second: String,
        /// The MAC.
        mac: String,
    },
}

/// A label change that the incremental compiler cannot apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    /// No such pod in the compiled cluster.
    #[error("no pod {0} in the compiled cluster")]
    NoPod(String),
    /// No such namespace in the compiled cluster.
    #[error("no namespace {0} in the compiled cluster")]
    NoNamespace(String),
}
