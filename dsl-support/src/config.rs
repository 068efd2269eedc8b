//! Compile-time configurations and the tune spaces declared next to kernels.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::BuildError;

/// Values of a kernel's compile-time parameters, by name (bools are 0/1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KernelConfig {
    pub values: BTreeMap<String, i64>,
}

impl KernelConfig {
    /// An empty config.
    pub fn new() -> Self {
        Self::default()
    }

    /// A config from `(name, value)` pairs.
    pub fn from_pairs(pairs: &[(&str, i64)]) -> Self {
        KernelConfig { values: pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect() }
    }

    /// This config with `name` set to `value`.
    pub fn with(mut self, name: &str, value: i64) -> Self {
        self.set(name, value);
        self
    }

    /// Sets `name` to `value`.
    pub fn set(&mut self, name: &str, value: i64) {
        self.values.insert(name.to_string(), value);
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<i64> {
        self.values.get(name).copied()
    }

    /// This config with every value of `other` set on top.
    pub fn merged(mut self, other: &KernelConfig) -> Self {
        for (k, v) in &other.values {
            self.values.insert(k.clone(), *v);
        }
        self
    }
}

impl From<BTreeMap<String, i64>> for KernelConfig {
    fn from(values: BTreeMap<String, i64>) -> Self {
        KernelConfig { values }
    }
}

impl fmt::Display for KernelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.values.iter().map(|(k, v)| format!("{k}={v}")).collect();
        write!(f, "{{{}}}", parts.join(", "))
    }
}

/// A constraint over a config: `None` when it reads a parameter the config lacks.
pub type ConstraintFn = fn(&KernelConfig) -> Option<bool>;

/// The tune space declared with `#[kernel(tune(...), constraint = "...")]`: the cartesian
/// product of the listed values, filtered by the constraint.
#[derive(Clone, Debug)]
pub struct TuneSpace {
    kernel: &'static str,
    params: Vec<(&'static str, Vec<i64>)>,
    constraint: Option<(&'static str, ConstraintFn)>,
}

impl TuneSpace {
    /// Used by generated code.
    pub fn new(
        kernel: &'static str,
        params: Vec<(&'static str, Vec<i64>)>,
        constraint: Option<(&'static str, ConstraintFn)>,
    ) -> Self {
        TuneSpace { kernel, params, constraint }
    }

    /// The kernel's name.
    pub fn kernel(&self) -> &'static str {
        self.kernel
    }

    /// The tuned parameters and their candidate values, in declaration order.
    pub fn params(&self) -> &[(&'static str, Vec<i64>)] {
        &self.params
    }

    /// The constraint's source text, if any.
    pub fn constraint(&self) -> Option<&'static str> {
        self.constraint.map(|(s, _)| s)
    }

    /// Every config of the space that satisfies the constraint, the first declared
    /// parameter varying slowest. `base` supplies the untuned parameters (e.g. a head dim).
    pub fn configs_with(&self, base: &KernelConfig) -> Vec<KernelConfig> {
        let mut out = vec![base.clone()];
        for (name, values) in &self.params {
            out = out.into_iter().flat_map(|c| values.iter().map(move |v| c.clone().with(name, *v))).collect();
        }
        out.retain(|c| self.satisfies(c));
        out
    }

    /// Every config of the space that satisfies the constraint.
    pub fn configs(&self) -> Vec<KernelConfig> {
        self.configs_with(&KernelConfig::new())
    }

    /// Number of configs that satisfy the constraint.
    pub fn len(&self) -> usize {
        self.configs().len()
    }

    /// Whether no config satisfies the constraint.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the constraint holds (`false` when it reads a missing parameter).
    pub fn satisfies(&self, c: &KernelConfig) -> bool {
        self.constraint.is_none_or(|(_, f)| f(c) == Some(true))
    }

    /// Checks that every tuned parameter has a listed value and the constraint holds.
    pub fn validate(&self, c: &KernelConfig) -> Result<(), BuildError> {
        for (name, values) in &self.params {
            let v = c
                .get(name)
                .ok_or_else(|| BuildError::MissingParam { kernel: self.kernel.into(), param: name.to_string() })?;
            if !values.contains(&v) {
                return Err(BuildError::NotInTuneSpace {
                    kernel: self.kernel.into(),
                    param: name.to_string(),
                    value: v,
                    allowed: values.clone(),
                });
            }
        }
        if let Some((text, _)) = self.constraint {
            if !self.satisfies(c) {
                return Err(BuildError::Constraint {
                    kernel: self.kernel.into(),
                    constraint: text.into(),
                    config: c.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Whether [`TuneSpace::validate`] accepts `c`.
    pub fn contains(&self, c: &KernelConfig) -> bool {
        self.validate(c).is_ok()
    }
}
