//! The one place that says who may do what, and over which sites.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{AppError, AppResult};

use super::Caller;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Investigator,
    Monitor,
    Sponsor,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Self::Admin,
        Self::Investigator,
        Self::Monitor,
        Self::Sponsor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Investigator => "investigator",
            Self::Monitor => "monitor",
            Self::Sponsor => "sponsor",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Self::Admin),
            "investigator" => Some(Self::Investigator),
            "monitor" => Some(Self::Monitor),
            "sponsor" => Some(Self::Sponsor),
            _ => None,
        }
    }
}

/// Things a caller may ask to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// sites, users, assignments
    ManageAccess,
    /// subjects and their records
    ReadClinical,
    /// enrol, record consent, enter and correct data
    EnterClinical,
    /// the audit trail
    ReadAudit,
    /// recompute the audit chain
    VerifyAudit,
    /// the running protocol
    ReadStudy,
    /// streamed exports of the clinical data (CSV, ODM, SDTM)
    Export,
    /// the outbox of serious adverse event alerts
    ReadSafetyAlerts,
    /// serious adverse events reported late
    ReadSafetyOverdue,
    /// read data queries
    ReadQueries,
    /// raise a data query
    RaiseQuery,
    /// answer a data query
    AnswerQuery,
    /// close or reopen a data query
    ManageQuery,
    /// mark records source-data-verified
    VerifySource,
    /// sign a subject's casebook
    Sign,
    /// lock and unlock data
    Lock,
}

/// The sites a permitted action covers. Every data query takes one and puts it in SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    AllSites,
    Sites(Vec<i64>),
}

impl Scope {
    pub fn covers(&self, site_id: i64) -> bool {
        match self {
            Self::AllSites => true,
            Self::Sites(ids) => ids.contains(&site_id),
        }
    }
    /// The site ids for an `= ANY(...)` filter, or `None` for all sites.
    pub fn site_ids(&self) -> Option<&[i64]> {
        match self {
            Self::AllSites => None,
            Self::Sites(ids) => Some(ids),
        }
    }
}

/// Maps (caller, permission) to a scope, or 403.
pub fn authorize(caller: &Caller, permission: Permission) -> AppResult<Scope> {
    match grant(caller.role, permission) {
        Some(Grant::AllSites) => Ok(Scope::AllSites),
        Some(Grant::OwnSites) => Ok(Scope::Sites(caller.site_ids.clone())),
        None => Err(AppError::Forbidden(format!(
            "The {} role may not do this.",
            caller.role.as_str()
        ))),
    }
}

/// Whether `viewer` may see who people are (names, e-mail addresses). Sponsors may not: they
/// see a user as [`pseudonym`], everywhere (the JSON API, ODM's AdminData and Signatures,
/// the CSV user columns, which hold ids only).
pub fn sees_identities(viewer: Role) -> bool {
    viewer != Role::Sponsor
}

/// How a user is named to someone who may not see identities: the user id, which is also
/// the ODM `UserOID` (`USR.<id>`) and the value of the CSV user columns, so the same person
/// can be followed across the API and the exports without being named.
pub fn pseudonym(user_id: i64) -> String {
    format!("User {user_id}")
}

/// The name of user `user_id` as `viewer` may see it.
pub fn shown_name(viewer: Role, user_id: i64, name: &str) -> String {
    if sees_identities(viewer) {
        name.to_owned()
    } else {
        pseudonym(user_id)
    }
}

/// The roles whose `permission` covers exactly their own sites: what a statement that
/// checks the role and the sites itself may accept (a one-statement entry).
pub fn roles_with_own_sites(permission: Permission) -> Vec<&'static str> {
    Role::ALL
        .into_iter()
        .filter(|r| grant(*r, permission) == Some(Grant::OwnSites))
        .map(Role::as_str)
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    AllSites,
    OwnSites,
}

fn grant(role: Role, permission: Permission) -> Option<Grant> {
    use Grant::{AllSites, OwnSites};
    use Permission as P;
    use Role as R;
    match (role, permission) {
        (_, P::ReadStudy) => Some(AllSites),
        (R::Admin, P::ManageAccess | P::ReadAudit | P::VerifyAudit | P::ReadClinical) => {
            Some(AllSites)
        }
        (R::Investigator, P::ReadClinical | P::EnterClinical) => Some(OwnSites),
        (R::Monitor, P::ReadClinical | P::ReadAudit) => Some(OwnSites),
        (R::Sponsor, P::ReadClinical) => Some(AllSites),
        (R::Admin | R::Sponsor, P::Export) => Some(AllSites),
        (R::Admin | R::Sponsor, P::ReadSafetyAlerts | P::ReadSafetyOverdue) => Some(AllSites),
        (R::Monitor, P::ReadSafetyOverdue) => Some(OwnSites),
        (R::Admin, P::ReadQueries | P::Lock) => Some(AllSites),
        (R::Investigator, P::ReadQueries | P::AnswerQuery | P::Sign) => Some(OwnSites),
        (R::Monitor, P::ReadQueries | P::RaiseQuery | P::ManageQuery | P::VerifySource) => {
            Some(OwnSites)
        }
        _ => None,
    }
}

/// Whether an admin may make this change to a user's role or activity. An admin may not
/// change their own role (they would grant it back or lock themselves out of fixing it), and
/// the last active admin may be neither demoted nor deactivated: nobody could manage access
/// afterwards. `other_active_admins` counts active admins besides the target.
pub fn check_access_change(
    caller_id: i64,
    target_id: i64,
    (old_role, new_role): (Role, Role),
    (old_active, new_active): (bool, bool),
    other_active_admins: i64,
) -> AppResult<()> {
    if caller_id == target_id && old_role != new_role {
        return Err(AppError::invalid(
            "role",
            "you cannot change your own role; another admin can",
        ));
    }
    let removes_an_admin =
        old_role == Role::Admin && old_active && (new_role != Role::Admin || !new_active);
    if removes_an_admin && other_active_admins == 0 {
        return Err(AppError::Conflict(
            "This is the last active admin: it cannot be demoted or deactivated. Make another user admin first."
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_admin_stays_and_nobody_changes_their_own_role() {
        let own = check_access_change(1, 1, (Role::Admin, Role::Monitor), (true, true), 3);
        assert!(matches!(own, Err(AppError::Validation(_))));
        assert!(check_access_change(1, 1, (Role::Admin, Role::Admin), (true, false), 1).is_ok());
        let last = check_access_change(1, 1, (Role::Admin, Role::Admin), (true, false), 0);
        assert!(matches!(last, Err(AppError::Conflict(_))));
        let demoted = check_access_change(1, 2, (Role::Admin, Role::Sponsor), (true, true), 0);
        assert!(matches!(demoted, Err(AppError::Conflict(_))));
        assert!(check_access_change(1, 2, (Role::Admin, Role::Sponsor), (true, true), 1).is_ok());
        // an inactive admin is no admin to keep
        assert!(check_access_change(1, 2, (Role::Admin, Role::Sponsor), (false, false), 0).is_ok());
        assert!(check_access_change(1, 2, (Role::Monitor, Role::Admin), (true, true), 0).is_ok());
    }
}
