//! Export endpoints (sponsor and admin): streamed CSV per form, CDISC ODM 1.3.2, SDTM-style
//! datasets as CSV, SAS XPORT or Dataset-JSON and their Define-XML 2.1. See `crate::export` for how they
//! stream.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use chrono::{Datelike, NaiveDate, Utc};
use diesel::prelude::*;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::{authorize, Caller, Permission, Scope};
use crate::domain::FieldError;
use crate::error::{AppError, AppResult};
use crate::export::{self, sink, Domain, Filters, Form, Job, Kind, Slot, Table};
use crate::schema::sites;
use crate::state::AppState;

use super::resource;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/exports/odm.xml").route(web::get().to(odm)))
        .service(resource("/exports/sdtm/define.xml").route(web::get().to(define)))
        .service(resource("/exports/sdtm/{domain}.csv").route(web::get().to(sdtm_csv)))
        .service(resource("/exports/sdtm/{domain}.xpt").route(web::get().to(sdtm_xpt)))
        .service(resource("/exports/sdtm/{domain}.json").route(web::get().to(sdtm_json)))
        .service(resource("/exports/{form}.csv").route(web::get().to(form_csv)));
}

/// Filters of a form export.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FormExportQuery {
    /// site code: only that site's records
    pub site: Option<String>,
    /// first day (YYYY-MM-DD, inclusive) of the form's main date: subjects `created_at`,
    /// consents `signed_on`, injections `administered_at`, temperatures `measured_at`,
    /// adverse_events `awareness_date`, queries `created_at`, a form of the study definition
    /// its `dated_by` item; timestamps by UTC day
    pub from: Option<NaiveDate>,
    /// last day (YYYY-MM-DD, inclusive), same column as `from`; both from 0001-01-01 to
    /// 9999-12-31 (else 422 naming the parameter, before anything is sent)
    pub to: Option<NaiveDate>,
    /// `true`: also records marked deleted (entered in error); default false
    pub include_deleted: Option<bool>,
}

/// Filters of the ODM export.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OdmQuery {
    /// site code: only that site's subjects
    pub site: Option<String>,
    /// `true`: a Transactional file with every audited change and its AuditRecord
    pub audit: Option<bool>,
}

/// Filters of an SDTM dataset.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SdtmQuery {
    /// site code: only that site's subjects
    pub site: Option<String>,
}

/// Takes a connection (a busy pool answers 503 before anything streams), resolves the site
/// filter, and starts the export on a blocking thread; the response streams its output.
async fn start(
    state: web::Data<AppState>,
    caller: Caller,
    scope: Scope,
    kind: Kind,
    mut filters: Filters,
) -> AppResult<HttpResponse> {
    let app = std::sync::Arc::as_ptr(&state.clone().into_inner()) as usize;
    // Exports hold a connection while they stream: wait a little for a free slot (small
    // exports finish in milliseconds) before refusing.
    let mut slot = Slot::take(app, state.settings.database.pool_max_size);
    for _ in 0..100 {
        if slot.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        slot = Slot::take(app, state.settings.database.pool_max_size);
    }
    let slot = slot.ok_or_else(|| AppError::Busy {
        retry_after_secs: 5,
        detail: "Too many exports are running on this server; retry shortly.".into(),
    })?;
    let pool = state.pool.clone();
    let site = filters.site.clone();
    let site_scope = scope.clone();
    let (conn, site_id) = web::block(move || -> AppResult<_> {
        let mut conn = pool.get()?;
        let site_id = match site {
            None => None,
            Some(code) => {
                let id: Option<i64> = sites::table
                    .filter(sites::code.eq(&code))
                    .select(sites::id)
                    .first(&mut conn)
                    .optional()?;
                match id {
                    Some(id) if site_scope.covers(id) => Some(id),
                    _ => return Err(AppError::invalid("site", "no such site in your scope")),
                }
            }
        };
        Ok((conn, site_id))
    })
    .await??;
    filters.site_id = site_id;
    let protocol = state.protocol.clone();
    let started = Utc::now();
    let file_name = kind.file_name(&protocol.file.study.id, started);
    let content_type = kind.content_type();
    let study = protocol.file.study.id.clone();
    let hash = protocol.file_hash.clone();
    let job = Job {
        kind,
        filters,
        scope,
        protocol,
        study: state.study.clone(),
        actor: caller.actor.clone(),
        role: caller.role,
        meta: caller.meta.clone(),
        started,
        slot: Some(slot),
    };
    let (out, body) = sink::channel();
    actix_web::rt::task::spawn_blocking(move || {
        let mut conn = conn;
        export::run(&mut conn, job, out);
    });
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{file_name}\""),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("X-Casebook-Protocol", study))
        .insert_header(("X-Casebook-Protocol-Hash", hash))
        .streaming(body))
}

fn check_dates(from: Option<NaiveDate>, to: Option<NaiveDate>) -> AppResult<()> {
    let errors: Vec<FieldError> = [("from", from), ("to", to)]
        .into_iter()
        .filter(|(_, d)| d.is_some_and(|d| !export::FILTER_YEARS.contains(&d.year())))
        .map(|(field, _)| FieldError::new(field, "must be a date from 0001-01-01 to 9999-12-31"))
        .collect();
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    match (from, to) {
        (Some(f), Some(t)) if f > t => Err(AppError::invalid("to", "must not be before `from`")),
        _ => Ok(()),
    }
}

/// One form as CSV (streamed).
///
/// Forms: `subjects`, `consents`, `injections`, `temperatures`, `adverse_events`,
/// `queries`, and every form of the running study definition that is entered through
/// `/subjects/{code}/forms/{form}` (all but `injection`, `temperature` and `adverse_event`,
/// which are exported above): `/exports/pain_vas.csv`, `/exports/echocardiography.csv`.
///
/// One header row, RFC 4180 (comma, CRLF, fields with comma, quote, CR or LF quoted, quotes
/// doubled), UTF-8. Rows in record id order. Numbers are exact decimals as stored;
/// booleans `true`/`false`; dates `YYYY-MM-DD`; timestamps ISO 8601 UTC with `Z`. User
/// columns (`created_by`, `obtained_by`, ...) are user ids; no names are exported.
/// Records marked deleted are left out unless `include_deleted=true`.
///
/// Columns, in order:
/// - subjects: id, subject_code, site_code, status, sex, birth_year_month, weight_kg,
///   eligibility, then the bookkeeping columns
/// - consents: id, subject_code, site_code, form_version, signed_on, signer,
///   representative_relationship, assent, obtained_by, withdrawn_on, withdrawal_scope,
///   withdrawal_reason, then the bookkeeping columns
/// - injections: id, subject_code, site_code, study_day, administered_at, dose_mg,
///   weight_kg, route, injection_site, lot_number, given, not_given_reason,
///   expected_dose_mg, protocol_deviation, deviation_reason, then the bookkeeping columns
/// - temperatures: id, subject_code, site_code, measured_at, celsius, method, fever, then
///   the bookkeeping columns
/// - adverse_events: id, subject_code, site_code, term, meddra_code, meddra_term,
///   onset_date, end_date, grade, serious, seriousness_criteria, relationship,
///   action_taken, outcome, awareness_date, then the bookkeeping columns
/// - queries: id, subject_code, site_code, record_type, record_id, form, field, status,
///   origin, opened_text, messages, last_message_kind, last_message_at, created_at,
///   created_by, updated_at (one row per query thread; `form` is the form of a record of the
///   study definition, empty for today's tables; no bookkeeping columns, never deleted)
/// - bookkeeping columns: version, created_at, created_by, updated_at, updated_by,
///   deleted_at, deleted_by, deleted_reason
/// - a form of the study definition: subject_code, site_code, visit, id, version,
///   definition_version (the published version the record was last checked against), then
///   each item of the form in definition order, then flags (the soft findings as JSON:
///   `[{"item", "message"}]`), created_at, created_by, updated_at, updated_by,
///   change_reason, deleted_at, deleted_by, deleted_reason. Values as stored: decimals as
///   exact text at the item's digits, several codes separated by `;`, an item without a
///   value empty. `from`/`to` apply to the form's `dated_by` item (its date; a partial date
///   such as `2026-10` sorts before the days it contains).
///
/// `eligibility` is a JSON object (criterion id -> answer); `seriousness_criteria` lists
/// the criteria separated by `;`; AE dates may be partial (`YYYY`, `YYYY-MM`).
///
/// Formula injection (OWASP "CSV Injection"): a text cell that starts with `=`, `+`, `-`,
/// `@`, tab, CR or LF is written with a leading `'` so that spreadsheets show it as text
/// instead of running it (`=HYPERLINK(...)` becomes `'=HYPERLINK(...)`). A plain decimal
/// number (`-1.5`, `-3`) is left as it is. Strip one leading `'` from such cells to get the
/// stored text; ODM, XPT and the JSON API carry it exactly.
///
/// Every export is audited (action `export`, the form as entity, filters, row count, SHA-256
/// of the file; a form of the study definition as entity `form_records`, with `form` and
/// the definition's `study` id and SHA-256 in the values). Headers `X-Casebook-Protocol` and `X-Casebook-Protocol-Hash` name the
/// protocol and its file's SHA-256. A transfer that ends without its final chunk is
/// incomplete: the export failed. Exports hold a database connection while they stream: at
/// most a quarter of the pool exports at once, more answer 429 with Retry-After.
#[utoipa::path(get, path = "/api/v1/exports/{form}.csv", tag = "exports",
    params(("form" = String, Path, description = "subjects, consents, injections, temperatures, adverse_events, queries, or a form of the study definition entered through /subjects/{code}/forms/{form}"),
        FormExportQuery),
    responses((status = 200, description = "the form as CSV", content_type = "text/csv", body = String),
        (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem),
        (status = 422, description = "unknown parameter, bad date or site", body = crate::error::Problem),
        (status = 429, description = "too many exports running; see Retry-After", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn form_csv(
    state: web::Data<AppState>,
    caller: Caller,
    form: web::Path<String>,
    query: web::Query<FormExportQuery>,
) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::Export)?;
    let kind = match Form::parse(&form) {
        Some(f) => Kind::Form(f),
        None => state
            .study
            .record_form(&form)
            .map(|f| Kind::Records(f.id.clone()))
            .ok_or(AppError::NotFound)?,
    };
    let q = query.into_inner();
    check_dates(q.from, q.to)?;
    let filters = Filters {
        site: q.site,
        from: q.from,
        to: q.to,
        include_deleted: q.include_deleted.unwrap_or(false),
        ..Filters::default()
    };
    start(state, caller, scope, kind, filters).await
}

/// The study as CDISC ODM 1.3.2 XML (streamed; valid against the official schema).
///
/// Study with GlobalVariables, measurement units and a MetaDataVersion (OID from the protocol
/// file's SHA-256) describing events SE.ENROLMENT (F.SUBJECT, F.CONSENT), SE.TREATMENT
/// (F.INJECTION, F.TEMPERATURE) and SE.AE (F.AE), their item groups (IG.*, repeating except
/// IG.SUBJECT, ItemGroupRepeatKey = record id), items (IT.*, e.g. IT.TEMP.CELSIUS) and code
/// lists; then the study definition's other forms: each visit listing some is an event
/// SE.V.<visit>, forms not tied to a visit share SE.LOGS, a form is F.<form> with one
/// repeating item group IG.<form> (ItemGroupRepeatKey = record id), items IT.<form>.<item>
/// with their data type (decimal: float with SignificantDigits; several codes: text, codes
/// separated by `;`), units MU.<unit> and code lists CL.<codelist>; AdminData with the users who changed or signed data (for sponsors pseudonymous:
/// no names, no e-mail addresses), the sites as Locations and a SignatureDef per signature
/// meaning; ClinicalData with one SubjectData per subject (Signature: the current casebook
/// signature, SiteRef, StudyEventData, FormData, ItemGroupData, ItemData).
///
/// Default: a Snapshot of the current values, records marked deleted left out.
/// `audit=true`: a Transactional file: every audited change of each record as its own
/// ItemGroupData (Insert, Update with the changed items, Remove) with an AuditRecord
/// (UserRef, LocationRef, DateTimeStamp, ReasonForChange, SourceID = audit row).
#[utoipa::path(get, path = "/api/v1/exports/odm.xml", tag = "exports", params(OdmQuery),
    responses((status = 200, description = "ODM 1.3.2", content_type = "application/xml", body = String),
        (status = 403, body = crate::error::Problem),
        (status = 422, description = "unknown parameter or site", body = crate::error::Problem),
        (status = 429, description = "too many exports running; see Retry-After", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn odm(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<OdmQuery>,
) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::Export)?;
    let q = query.into_inner();
    let filters = Filters {
        site: q.site,
        audit: q.audit.unwrap_or(false),
        ..Filters::default()
    };
    start(state, caller, scope, Kind::Odm, filters).await
}

async fn sdtm(
    state: web::Data<AppState>,
    caller: Caller,
    domain: &str,
    table: Table,
    query: SdtmQuery,
) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::Export)?;
    let domain = Domain::parse(domain)
        .filter(|d| export::sdtm::exports(&state.study, d))
        .ok_or(AppError::NotFound)?;
    let filters = Filters {
        site: query.site,
        ..Filters::default()
    };
    start(state, caller, scope, Kind::Sdtm(domain, table), filters).await
}

/// An SDTM-style dataset as CSV (streamed): DM, DS, EX, VS, AE, or a domain a form of the
/// running study definition maps to (`sdtm = { domain = "LB" }`); any other domain is 404.
///
/// USUBJID = study id + `-` + subject code. Rows sorted by USUBJID, then date, then entry
/// order; --SEQ numbers them within a subject. --DTC are site-local date/times as collected
/// (ISO 8601 without offset; AE dates may be partial); --DY counts from the site-local date
/// of the first exposure (RFSTDTC: the first injection given or record of a form mapped to
/// EX; RFENDTC the last), with no day 0. Records marked deleted are never included.
/// Text cells that a spreadsheet would run as a formula get a leading `'`, as in the form
/// CSV exports (the XPT and Dataset-JSON files carry the exact text).
///
/// Variables, in order (after STUDYID, DOMAIN, USUBJID):
/// - DM: SUBJID, RFSTDTC, RFENDTC, RFICDTC, SITEID, BRTHDTC, AGE, AGEU, SEX, ARMCD, ARM,
///   ACTARMCD, ACTARM, COUNTRY
/// - DS (informed consent, withdrawal, completion): DSSEQ, DSTERM, DSDECOD, DSCAT, DSSCAT,
///   DSSTDTC, DSSTDY
/// - EX (injections given): EXSEQ, EXTRT, EXDOSE, EXDOSU, EXDOSFRM, EXDOSFRQ, EXROUTE, EXLOC,
///   EXLOT, EXADJ, EXSTDTC, EXENDTC, EXSTDY, EXENDY
/// - VS (temperature): VSSEQ, VSTESTCD (TEMP), VSTEST, VSORRES, VSORRESU (C), VSSTRESC,
///   VSSTRESN, VSSTRESU, VSLOC (from the method), VSDTC, VSDY
/// - AE: AESEQ, AETERM, AEDECOD, AEPTCD, AESTDTC, AEENDTC, AESTDY, AEENDY, AETOXGR, AESER,
///   AESDTH, AESLIFE, AESHOSP, AESDISAB, AESCONG, AESMIE, AEREL, AEACN, AEOUT
/// - a findings domain of the definition's forms (VS, LB, QS, CV, FA, ...: one row per item
///   value): --SEQ, --TESTCD (from the item id), --TEST (its label), --CAT (the form's
///   category; FA also FAOBJ), --ORRES (as stored: decimals at the item's digits, booleans
///   Y/N), --ORRESU, --STRESC, --STRESN, --STRESU, the variables items are annotated with
///   (`LBSPEC`), VISITNUM, VISIT, VISITDY, --DTC (the form's dated_by item), --DY
/// - an events or interventions domain of the definition's forms (AE, CE, DS, MH / EX, CM,
///   ...: one row per record): --SEQ, --TERM or --TRT (the item annotated with it, else the
///   form's category or name), --CAT, EX/CM: --DOSE, --DOSU, the annotated variables,
///   VISITNUM, VISIT, VISITDY, --STDTC, --ENDTC, --STDY, --ENDY (DS: --STDTC, --STDY)
///
/// - SUPP-- of such an events or interventions domain (`suppce`): the items without an
///   annotation: STUDYID, RDOMAIN, USUBJID, IDVAR (--SEQ), IDVARVAL, QNAM, QLABEL, QVAL,
///   QORIG (CRF or DERIVED), QEVAL
///
/// In DS, EX and VS the forms' rows join today's, and the variables above that today's
/// dataset lacks (--CAT, VISITNUM, VISIT, VISITDY, annotated ones) come before its timing
/// variables. Records entered in error are never included.
#[utoipa::path(get, path = "/api/v1/exports/sdtm/{domain}.csv", tag = "exports",
    params(("domain" = String, Path, description = "dm, ds, ex, vs, ae, or a domain of the study definition's forms (lb, qs, cv, fa, ce, cm, ...) or its supp-- dataset (suppce)"), SdtmQuery),
    responses((status = 200, description = "the dataset as CSV", content_type = "text/csv", body = String),
        (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem),
        (status = 429, description = "too many exports running; see Retry-After", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn sdtm_csv(
    state: web::Data<AppState>,
    caller: Caller,
    domain: web::Path<String>,
    query: web::Query<SdtmQuery>,
) -> AppResult<HttpResponse> {
    sdtm(state, caller, &domain, Table::Csv, query.into_inner()).await
}

/// An SDTM-style dataset as a SAS XPORT version 5 transport file (streamed).
///
/// Same variables and rows as the CSV; 8-character names, 40-character labels, character
/// variables of fixed length (free text up to 200 bytes), numerics as IBM floating point.
/// The dataset label names the protocol and the start of its file hash where it fits.
#[utoipa::path(get, path = "/api/v1/exports/sdtm/{domain}.xpt", tag = "exports",
    params(("domain" = String, Path, description = "dm, ds, ex, vs, ae, or a domain of the study definition's forms (lb, qs, cv, fa, ce, cm, ...) or its supp-- dataset (suppce)"), SdtmQuery),
    responses((status = 200, description = "SAS XPORT v5", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem),
        (status = 429, description = "too many exports running; see Retry-After", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn sdtm_xpt(
    state: web::Data<AppState>,
    caller: Caller,
    domain: web::Path<String>,
    query: web::Query<SdtmQuery>,
) -> AppResult<HttpResponse> {
    sdtm(state, caller, &domain, Table::Xpt, query.into_inner()).await
}

/// An SDTM-style dataset as CDISC Dataset-JSON v1.1 (valid against its JSON Schema).
///
/// Same variables and rows as the CSV and XPT. `studyOID` is the running study definition's
/// study, `metaDataVersionOID` and `metaDataRef` (`define.xml`, relative like Define-XML's
/// `def:leaf`) name `/exports/sdtm/define.xml`, `itemGroupOID` its ItemGroupDef
/// (`IG.<domain>`), each column's `itemOID` its ItemDef (`IT.<domain>.<variable>`), with
/// Define-XML's label, data type (text `string`, `integer`, `float`, --DTC `date` or
/// `datetime`), length of text variables and key sequence. `records` is the row count;
/// `rows` are arrays in column order: text exactly as stored (no spreadsheet guard; empty
/// text is `""`), numbers as JSON numbers, a missing number `null`.
///
/// The row count comes before the rows: the file is sent once its last row is encoded
/// (rows beyond 1 MiB wait in a temporary file, so memory stays bounded).
#[utoipa::path(get, path = "/api/v1/exports/sdtm/{domain}.json", tag = "exports",
    params(("domain" = String, Path, description = "dm, ds, ex, vs, ae, or a domain of the study definition's forms (lb, qs, cv, fa, ce, cm, ...) or its supp-- dataset (suppce)"), SdtmQuery),
    responses((status = 200, description = "Dataset-JSON v1.1", content_type = "application/json", body = Object),
        (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem),
        (status = 429, description = "too many exports running; see Retry-After", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn sdtm_json(
    state: web::Data<AppState>,
    caller: Caller,
    domain: web::Path<String>,
    query: web::Query<SdtmQuery>,
) -> AppResult<HttpResponse> {
    sdtm(state, caller, &domain, Table::Json, query.into_inner()).await
}

/// Define-XML 2.1 metadata of the SDTM datasets (valid against the Define-XML 2.1 schema).
///
/// One ItemGroupDef per dataset that `/exports/sdtm/{domain}.xpt` serves for the running
/// study (DM, DS, EX, VS, AE and each domain its definition maps a form to), with its class
/// (def:Class), structure, keys (STUDYID, USUBJID, --SEQ), and its XPT file as def:leaf
/// (`lb.xpt`, relative to this file); one ItemDef per variable (`IT.<domain>.<variable>`)
/// with data type, length, label and origin (Collected for what an item fills, Derived,
/// Assigned); for each findings dataset of the definition's forms, a code list of its test
/// codes decoded by the items' labels. Audited as an export (entity `define`, rows = datasets).
#[utoipa::path(get, path = "/api/v1/exports/sdtm/define.xml", tag = "exports",
    responses((status = 200, description = "Define-XML 2.1", content_type = "application/xml", body = String),
        (status = 403, body = crate::error::Problem),
        (status = 429, description = "too many exports running; see Retry-After", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn define(state: web::Data<AppState>, caller: Caller) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::Export)?;
    start(state, caller, scope, Kind::Define, Filters::default()).await
}
