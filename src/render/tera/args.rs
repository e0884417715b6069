//! Reading the named arguments of our template functions and filters, with
//! errors that name the function and the argument (Tera's own only name the
//! type), and that reject misspelled arguments instead of ignoring them.

use tera::{Error, Kwargs, TeraResult, Value};

/// The named arguments of one call of `what` (a function or filter name).
pub(super) struct Args<'a> {
    what: &'static str,
    kwargs: &'a Kwargs,
}

impl<'a> Args<'a> {
    /// Checks that every argument given is one of `allowed`.
    pub(super) fn new(
        what: &'static str,
        kwargs: &'a Kwargs,
        allowed: &[&str],
    ) -> TeraResult<Args<'a>> {
        for (key, _) in kwargs.iter() {
            if !key.as_str().is_some_and(|k| allowed.contains(&k)) {
                let takes = if allowed.is_empty() {
                    "no arguments".to_string()
                } else {
                    allowed.join(", ")
                };
                return Err(Error::message(format!(
                    "{what}: unknown argument `{key}` (takes {takes})"
                )));
            }
        }
        Ok(Args { what, kwargs })
    }

    /// The argument `name`, if given.
    pub(super) fn value(&self, name: &'static str) -> TeraResult<Option<&'a Value>> {
        self.kwargs.get::<&Value>(name)
    }

    /// The string argument `name`, if given.
    pub(super) fn str(&self, name: &'static str) -> TeraResult<Option<&'a str>> {
        match self.value(name)? {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| {
                Error::message(format!(
                    "{}: argument `{name}` must be a string, got {}",
                    self.what,
                    v.name()
                ))
            }),
        }
    }

    /// The string argument `name`, which must be given.
    pub(super) fn req_str(&self, name: &'static str) -> TeraResult<&'a str> {
        self.str(name)?.ok_or_else(|| self.missing(name))
    }

    /// The integer argument `name`, which must be given.
    pub(super) fn req_int(&self, name: &'static str) -> TeraResult<i64> {
        let v = self.value(name)?.ok_or_else(|| self.missing(name))?;
        v.as_i64().ok_or_else(|| {
            Error::message(format!(
                "{}: argument `{name}` must be an integer, got {}",
                self.what,
                v.name()
            ))
        })
    }

    /// The boolean argument `name`, if given.
    pub(super) fn bool(&self, name: &'static str) -> TeraResult<Option<bool>> {
        match self.value(name)? {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| {
                Error::message(format!(
                    "{}: argument `{name}` must be true or false, got {}",
                    self.what,
                    v.name()
                ))
            }),
        }
    }

    fn missing(&self, name: &str) -> Error {
        Error::message(format!("{}: missing argument `{name}`", self.what))
    }
}
