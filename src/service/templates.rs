//! The template registry's use cases: everyone reads it, admins create templates (submitted to
//! Meta, see [`crate::templates`]). A creation is an admin action like any other: it is
//! registered in one commit with its audit record (`template.create`), in the order of all
//! admin changes; the submission to Meta comes first, outside that order, since it waits on
//! the network.

use std::sync::Arc;

use serde_json::json;

use super::people::People;
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

/// Submits a template to Meta and registers it (admins), audited.
pub async fn create(
    ctx: &Ctx,
    people: &People,
    caller: &Caller,
    t: NewTemplate,
) -> Result<TemplateRecord> {
    admins_only(caller)?;
    let registry = registry(ctx)?;
    let created = registry.submit(&t).await.map_err(|e| -> ServiceError {
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
    })?;
    let target = format!("{}/{}", t.name, t.language);
    let after = json!({
        "id": created.id,
        "name": t.name,
        "language": t.language,
        "category": created.category.clone().unwrap_or_else(|| t.category.clone()),
        "status": created.status,
        "components": t.components,
    });
    let rec = people
        .audited(
            caller,
            "template.create",
            &target,
            None,
            Some(after),
            |batch| async {
                registry
                    .register(t, created, batch)
                    .await
                    .map_err(Error::from)
            },
        )
        .await?;
    Ok(rec)
}
