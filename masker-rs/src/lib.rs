//! PII detection and masking. The Python module `gateway._masker` sits behind the `python` feature.

/// Version of the masker crate, reported by the gateway's health endpoint.
#[must_use]
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[cfg(feature = "python")]
mod python {
    use pyo3::prelude::*;

    #[pymodule]
    fn _masker(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", super::version())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_is_set() {
        assert!(!super::version().is_empty());
    }
}
