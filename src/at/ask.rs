//! The one fatal-or-optional policy for AT commands: a refusal (`ERROR`, `+CME ERROR`,
//! `+CMS ERROR`, an odd final result) is the modem's answer and may be tolerated; a timeout, a
//! closed port or a flood means the link is in trouble and always propagates, so whoever owns the
//! link can recover it. Init, doctor and discovery ask optional questions through
//! [`AtClient::ask`]; other call sites split a result with [`Refusal::refusal`].

use std::time::Duration;

use super::engine::{AtClient, AtError};

impl AtError {
    /// Whether the link itself is in trouble (timeout, closed, flooded) rather than the modem
    /// refusing the command.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            AtError::Timeout { .. } | AtError::Closed { .. } | AtError::Overflow { .. }
        )
    }
}

/// Splits an AT result by [`AtError::is_fatal`].
pub trait Refusal<T> {
    /// The outer `Err` is link trouble (pass it on with `?`); the inner `Err` is the modem's
    /// refusal, for the caller to tolerate or to turn into its own error.
    fn refusal(self) -> Result<Result<T, AtError>, AtError>;

    /// A refusal as `None`; link trouble stays an error.
    fn refused_as_none(self) -> Result<Option<T>, AtError>;
}

impl<T> Refusal<T> for Result<T, AtError> {
    fn refusal(self) -> Result<Result<T, AtError>, AtError> {
        match self {
            Err(e) if e.is_fatal() => Err(e),
            other => Ok(other),
        }
    }

    fn refused_as_none(self) -> Result<Option<T>, AtError> {
        self.refusal().map(Result::ok)
    }
}

impl AtClient {
    /// Runs `line`, turning a refusal into `None` (logged at debug) but passing link trouble on.
    pub async fn ask(
        &mut self,
        line: &str,
        timeout: Duration,
    ) -> Result<Option<Vec<String>>, AtError> {
        match self.command(line, timeout).await.refusal()? {
            Ok(lines) => Ok(Some(lines)),
            Err(e) => {
                tracing::debug!(%line, error = %e, "optional command refused");
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::at::{CmeError, CmsError, Final};

    #[test]
    fn refusals_are_the_inner_error_and_link_trouble_the_outer() {
        let refusals = [
            AtError::Error,
            AtError::Cme(CmeError::from_code(10)),
            AtError::Cms(CmsError::from_code(38)),
            AtError::Unexpected(Final::NoCarrier),
            AtError::NoPrompt,
        ];
        for e in refusals {
            assert!(!e.is_fatal(), "{e:?}");
            assert_eq!(Err::<(), _>(e.clone()).refusal(), Ok(Err(e.clone())));
            assert_eq!(Err::<(), _>(e).refused_as_none(), Ok(None));
        }
        let fatal = [
            AtError::Timeout {
                payload_written: false,
            },
            AtError::Overflow {
                payload_written: true,
            },
            AtError::Closed {
                reason: "gone".into(),
                payload_written: false,
            },
        ];
        for e in fatal {
            assert!(e.is_fatal(), "{e:?}");
            assert_eq!(Err::<(), _>(e.clone()).refusal(), Err(e.clone()));
            assert_eq!(Err::<(), _>(e.clone()).refused_as_none(), Err(e));
        }
        assert_eq!(Ok::<_, AtError>(7).refusal(), Ok(Ok(7)));
        assert_eq!(Ok::<_, AtError>(7).refused_as_none(), Ok(Some(7)));
    }
}
