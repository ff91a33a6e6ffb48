//! The template registry's use cases: everyone reads it, admins create templates (submitted to
//! Meta, see [`crate::templates`]).

use std::sync::Arc;

use super::{admins_only, Result, ServiceError};
use crate::actors::Ctx;
use crate::domain::{Caller, DomainError};
use crate::error::Error;
use crate::store::templates::TemplateRecord;
use crate::templates::{GraphError, NewTemplate, Registry, TemplateError};

fn registry(ctx: &Ctx) -> Result<&Arc<Registry>> {
    ctx.templates
        .get()
        .ok_or(ServiceError::Core(Error::Unavailable))
}

/// Every template, by name then language (any authenticated caller).
pub fn list(ctx: &Ctx, _caller: &Caller) -> Result<Vec<TemplateRecord>> {
    Ok(registry(ctx)?.list())
}

/// Submits a template to Meta and registers it (admins).
pub async fn create(ctx: &Ctx, caller: &Caller, t: NewTemplate) -> Result<TemplateRecord> {
    admins_only(caller)?;
    registry(ctx)?.create(t).await.map_err(|e| -> ServiceError {
        match e {
            TemplateError::Invalid(m) => DomainError::Invalid(m).into(),
            TemplateError::AlreadyExists { .. } => DomainError::AlreadyExists(e.to_string()).into(),
            TemplateError::Graph(GraphError::Refused { message, .. }) => {
                DomainError::Invalid(format!("Meta refused the template: {message}")).into()
            }
            TemplateError::Graph(GraphError::Unavailable(detail)) => {
                tracing::warn!(%detail, "template not submitted: Graph API unavailable");
                ServiceError::Core(Error::Unavailable)
            }
            TemplateError::Store(s) => s.into(),
        }
    })
}
