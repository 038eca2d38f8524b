//! The PyO3 module `gateway._masker` (feature `python`). Inputs are converted to Rust types,
//! then large inputs are masked with the interpreter detached (`py.detach`).

use std::collections::BTreeMap;
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::{Config, Custom, Error, Masker};

/// Inputs at least this long are masked with the interpreter detached.
const DETACH_AT: usize = 4096;

/// Runs `work` with the interpreter detached when the input is large enough to pay for it.
fn detached_if_large<T: Send>(py: Python<'_>, len: usize, work: impl FnOnce() -> T + Send) -> T {
    if len >= DETACH_AT {
        py.detach(work)
    } else {
        work()
    }
}

impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        PyValueError::new_err(e.to_string())
    }
}

type PyCounts = BTreeMap<String, u64>;

/// Detectors, style and JSONPath expressions compiled once (per policy rule).
#[pyclass(name = "Masker", module = "gateway._masker", frozen)]
struct PyMasker {
    inner: Arc<Masker>,
    /// Entity ids as Python strings, by detector index: findings share them instead of
    /// building a new `str` per finding.
    names: Vec<Py<PyString>>,
}

#[pymethods]
impl PyMasker {
    #[new]
    #[pyo3(signature = (entities, *, style = "tag", hash_key = None, custom = Vec::new(), paths = Vec::new(), phone_regions = Vec::new()))]
    fn new(
        py: Python<'_>,
        entities: Vec<String>,
        style: &str,
        hash_key: Option<Vec<u8>>,
        custom: Vec<(String, String, Option<String>)>,
        paths: Vec<String>,
        phone_regions: Vec<String>,
    ) -> PyResult<Self> {
        let cfg = Config {
            entities,
            style: style.to_owned(),
            hash_key,
            custom: custom
                .into_iter()
                .map(|(name, pattern, validator)| Custom {
                    name,
                    pattern,
                    validator,
                })
                .collect(),
            paths,
            phone_regions,
        };
        let inner = Arc::new(Masker::new(&cfg)?);
        let names = inner
            .entities()
            .map(|id| PyString::new(py, id).unbind())
            .collect();
        Ok(PyMasker { inner, names })
    }

    /// Masked text and findings `(entity, start, end)`, byte offsets in the original UTF-8.
    fn mask_text(&self, py: Python<'_>, text: &str) -> (String, Vec<(Py<PyString>, usize, usize)>) {
        let (out, hits) = detached_if_large(py, text.len(), || self.inner.mask_text_hits(text));
        let findings = hits
            .into_iter()
            .map(|h| (self.names[h.det].clone_ref(py), h.start, h.end))
            .collect();
        (out, findings)
    }

    /// Masked JSON body and counts by entity.
    fn mask_json<'py>(
        &self,
        py: Python<'py>,
        body: &[u8],
    ) -> PyResult<(Bound<'py, PyBytes>, PyCounts)> {
        let (out, counts) = detached_if_large(py, body.len(), || self.inner.mask_json(body))?;
        Ok((PyBytes::new(py, &out), counts))
    }

    /// `mask_json`, and whether the paths selected a non-empty string that does not hold JSON.
    fn mask_json_with_selection<'py>(
        &self,
        py: Python<'py>,
        body: &[u8],
    ) -> PyResult<(Bound<'py, PyBytes>, PyCounts, bool)> {
        let (out, counts, selected) =
            detached_if_large(py, body.len(), || self.inner.mask_json_with_selection(body))?;
        Ok((PyBytes::new(py, &out), counts, selected))
    }

    /// Every string of a JSON text masked (decoded, masked, re-encoded); counts by entity.
    fn mask_json_strings<'py>(
        &self,
        py: Python<'py>,
        body: &[u8],
    ) -> PyResult<(Bound<'py, PyBytes>, PyCounts)> {
        let text = std::str::from_utf8(body).map_err(Error::from)?;
        let (out, counts) =
            detached_if_large(py, body.len(), || self.inner.mask_json_strings(text));
        Ok((PyBytes::new(py, out.as_bytes()), counts))
    }

    /// A stream masker for JSON text (every string masked).
    fn json_stream(&self) -> PyTextStream {
        PyTextStream {
            inner: Stream::Json(self.inner.json_stream()),
        }
    }

    /// A stream masker for plain text.
    fn text_stream(&self) -> PyTextStream {
        PyTextStream {
            inner: Stream::Text(self.inner.text_stream()),
        }
    }

    /// A stream masker for `text/event-stream` bytes.
    fn sse_stream(&self) -> PySseStream {
        PySseStream {
            inner: self.inner.sse_stream(),
        }
    }

    /// Enabled detector ids.
    #[getter]
    fn entities(&self) -> Vec<String> {
        self.inner.entities().map(str::to_owned).collect()
    }

    /// The JSONPath expressions as given.
    #[getter]
    fn paths(&self) -> Vec<String> {
        self.inner.paths().sources().to_vec()
    }

    fn __repr__(&self) -> String {
        format!("Masker(entities={:?})", self.entities())
    }
}

enum Stream {
    Text(crate::TextStream),
    Json(crate::JsonStream),
}

/// Plain text, or JSON text string by string, masked as one stream.
#[pyclass(name = "TextStream", module = "gateway._masker")]
struct PyTextStream {
    inner: Stream,
}

#[pymethods]
impl PyTextStream {
    fn push<'py>(&mut self, py: Python<'py>, chunk: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        let inner = &mut self.inner;
        let out = detached_if_large(py, chunk.len(), || match inner {
            Stream::Text(s) => s.push(chunk),
            Stream::Json(s) => s.push(chunk),
        })?;
        Ok(PyBytes::new(py, out.as_bytes()))
    }

    fn finish<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let out = match &mut self.inner {
            Stream::Text(s) => s.finish(),
            Stream::Json(s) => s.finish(),
        }?;
        Ok(PyBytes::new(py, out.as_bytes()))
    }

    #[getter]
    fn counts(&self) -> PyCounts {
        match &self.inner {
            Stream::Text(s) => s.counts(),
            Stream::Json(s) => s.counts(),
        }
    }
}

/// A `text/event-stream` body masked event by event.
#[pyclass(name = "SseStream", module = "gateway._masker")]
struct PySseStream {
    inner: crate::SseStream,
}

#[pymethods]
impl PySseStream {
    fn push<'py>(&mut self, py: Python<'py>, chunk: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        let inner = &mut self.inner;
        let out = detached_if_large(py, chunk.len(), || inner.push(chunk))?;
        Ok(PyBytes::new(py, &out))
    }

    fn finish<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let out = self.inner.finish()?;
        Ok(PyBytes::new(py, &out))
    }

    /// After `push` or `finish` raised: the events masked before the failing one (once).
    fn take_released<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.take_released())
    }

    #[getter]
    fn counts(&self) -> PyCounts {
        self.inner.counts()
    }

    #[getter]
    fn model(&self) -> Option<String> {
        self.inner.model().map(str::to_owned)
    }
}

/// Does this JSON text repeat a member name in some object (names compared decoded)?
/// ValueError if it is not JSON or nests 128 levels or deeper.
#[pyfunction]
fn repeats_a_name(body: &[u8]) -> PyResult<bool> {
    let text = std::str::from_utf8(body).map_err(Error::from)?;
    crate::unique_keys::repeats_a_name(text).map_err(|e| Error::from(e).into())
}

#[pymodule]
fn _masker(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", crate::version())?;
    m.add("DETECTORS", crate::builtin_ids())?;
    m.add(
        "DEFAULT_RESPONSE_PATHS",
        crate::DEFAULT_RESPONSE_PATHS.to_vec(),
    )?;
    m.add(
        "DEFAULT_REQUEST_PATHS",
        crate::DEFAULT_REQUEST_PATHS.to_vec(),
    )?;
    m.add("HOLD_BACK", crate::HOLD_BACK)?;
    m.add(
        "DEFAULT_PHONE_REGIONS",
        crate::DEFAULT_PHONE_REGIONS.to_vec(),
    )?;
    m.add("CONTEXT_BEFORE", crate::CONTEXT_BEFORE)?;
    m.add_function(wrap_pyfunction!(repeats_a_name, m)?)?;
    m.add_class::<PyMasker>()?;
    m.add_class::<PyTextStream>()?;
    m.add_class::<PySseStream>()?;
    Ok(())
}
