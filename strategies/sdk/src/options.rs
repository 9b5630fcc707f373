use crate::{DponeError, OptionKind, OptionSpec, OptionValue, Term, types::FieldError};

/// Option naming the key columns, shared so every strategy spells it the same way.
pub const UNIQUE_KEY: &str = "unique_key";
/// Option naming the cursor column of incremental strategies.
pub const CURSOR_COLUMN: &str = "cursor_column";

/// A required option for [`crate::StrategyInfo::options`].
pub fn required(name: &str, kind: OptionKind, description: &str) -> OptionSpec {
    spec(name, kind, true, description)
}

/// An optional option for [`crate::StrategyInfo::options`].
pub fn optional(name: &str, kind: OptionKind, description: &str) -> OptionSpec {
    spec(name, kind, false, description)
}

fn spec(name: &str, kind: OptionKind, required: bool, description: &str) -> OptionSpec {
    OptionSpec {
        name: name.into(),
        kind,
        required,
        description: description.into(),
    }
}

/// The manifest's `sink.strategy` options of a run.
///
/// The host already checked names, presence and kinds against `describe`; the accessors
/// check again so a host bug surfaces as a config error naming the field, not a wrong load.
#[derive(Debug)]
pub struct Options(Vec<(String, OptionValue)>);

impl Options {
    pub fn new(options: Vec<(String, OptionValue)>) -> Self {
        Self(options)
    }

    /// A text option, `None` when absent.
    pub fn text(&self, name: &str) -> Result<Option<String>, DponeError> {
        match self.get(name) {
            None => Ok(None),
            Some(OptionValue::Text(text)) => Ok(Some(text.clone())),
            Some(_) => Err(wrong_kind(name, "text")),
        }
    }

    pub fn required_text(&self, name: &str) -> Result<String, DponeError> {
        self.text(name)?.ok_or_else(|| missing(name))
    }

    /// A text-list option; empty when absent, which every caller treats as "not given".
    pub fn text_list(&self, name: &str) -> Result<Vec<String>, DponeError> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(OptionValue::TextList(list)) => Ok(list.clone()),
            Some(_) => Err(wrong_kind(name, "list of text")),
        }
    }

    /// A text-list option that must name at least one entry.
    pub fn required_text_list(&self, name: &str) -> Result<Vec<String>, DponeError> {
        let list = self.text_list(name)?;
        if list.is_empty() {
            return Err(invalid_config(name, "is required and must not be empty"));
        }
        Ok(list)
    }

    /// An integer option, `None` when absent.
    pub fn integer(&self, name: &str) -> Result<Option<i64>, DponeError> {
        match self.get(name) {
            None => Ok(None),
            Some(OptionValue::Integer(i)) => Ok(Some(*i)),
            Some(_) => Err(wrong_kind(name, "integer")),
        }
    }

    /// A filter option; empty (every row) when absent.
    pub fn filter(&self, name: &str) -> Result<Vec<Term>, DponeError> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(OptionValue::Filter(terms)) => Ok(terms.clone()),
            Some(_) => Err(wrong_kind(name, "filter")),
        }
    }

    /// A filter option that must have at least one term: an empty filter matches every row,
    /// which no caller of this accessor may take for a bounded window.
    pub fn required_filter(&self, name: &str) -> Result<Vec<Term>, DponeError> {
        match self.get(name) {
            None => Err(missing(name)),
            Some(OptionValue::Filter(terms)) if terms.is_empty() => Err(invalid_config(
                name,
                "must have at least one term (an empty filter matches every row)",
            )),
            Some(OptionValue::Filter(terms)) => Ok(terms.clone()),
            Some(_) => Err(wrong_kind(name, "filter")),
        }
    }

    fn get(&self, name: &str) -> Option<&OptionValue> {
        self.0
            .iter()
            .find_map(|(key, value)| (key == name).then_some(value))
    }
}

fn missing(name: &str) -> DponeError {
    invalid_config(name, "is required")
}

fn wrong_kind(name: &str, expected: &str) -> DponeError {
    invalid_config(name, &format!("must be a {expected}"))
}

/// An `invalid-config` error for the option `name`, naming its manifest field.
pub fn invalid_config(name: &str, message: &str) -> DponeError {
    DponeError::InvalidConfig(FieldError {
        field: format!("sink.strategy.{name}"),
        message: message.into(),
    })
}
