//! A subject's schedule, `GET /subjects/{code}/schedule`: windows as site-local dates from
//! day 1, and the statuses a data manager reads (docs/study-definitions.md, "Schedule").
//! Dates are computed from today in the site's zone, as the server computes them.

use casebook::auth::Role;
use chrono::{Days, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::{json, Value};

use crate::clinical::{injection, new_subject};
use crate::helpers::TestApp;

/// UTC+14 and UTC-11: a site-local date is never the UTC date at the times used here.
const KIRITIMATI: &str = "Pacific/Kiritimati";
const PAGO_PAGO: &str = "Pacific/Pago_Pago";

fn zone(name: &str) -> Tz {
    name.parse().unwrap()
}

fn today(tz: Tz) -> NaiveDate {
    Utc::now().with_timezone(&tz).date_naive()
}

fn days_before(date: NaiveDate, n: u64) -> NaiveDate {
    date.checked_sub_days(Days::new(n)).unwrap()
}

fn days_after(date: NaiveDate, n: u64) -> NaiveDate {
    date.checked_add_days(Days::new(n)).unwrap()
}

/// The instant of `hh:mm` site-local time on `date`, as RFC 3339 in UTC.
fn at(tz: Tz, date: NaiveDate, hh: u32, mm: u32) -> String {
    let local = date.and_time(NaiveTime::from_hms_opt(hh, mm, 0).unwrap());
    tz.from_local_datetime(&local)
        .single()
        .unwrap()
        .with_timezone(&Utc)
        .to_rfc3339()
}

/// Enrols a subject at `site` with a consent signed 60 days ago.
async fn enrol(app: &TestApp, token: &str, site: &str, tz: Tz) -> String {
    let r = app
        .post("/api/v1/subjects", token, &new_subject(site))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let code = r.body["subject_code"].as_str().unwrap().to_owned();
    let signed = days_before(today(tz), 60).to_string();
    let r = app
        .post(
            &format!("/api/v1/subjects/{code}/consents"),
            token,
            &json!({"form_version": "2.0", "signed_on": signed, "signer": "legal_representative",
                    "representative_relationship": "mother", "assent": false}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    code
}

async fn inject(app: &TestApp, token: &str, code: &str, day: i32, when: &str) {
    let r = app
        .post(
            &format!("/api/v1/subjects/{code}/injections"),
            token,
            &injection(day, when, 40.0),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

async fn schedule(app: &TestApp, token: &str, code: &str) -> Value {
    let r = app
        .get(&format!("/api/v1/subjects/{code}/schedule"), token)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}

fn visit<'a>(s: &'a Value, id: &str) -> &'a Value {
    s["visits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == id)
        .unwrap_or_else(|| panic!("no visit {id} in {s}"))
}

fn window(v: &Value) -> (String, String, String) {
    let s = |k: &str| v[k].as_str().unwrap_or("none").to_owned();
    (s("window_opens"), s("target_date"), s("window_closes"))
}

fn ymd(d: NaiveDate) -> String {
    d.to_string()
}

#[actix_web::test]
async fn windows_are_site_local_dates_and_their_edges_count() {
    let app = TestApp::spawn().await;
    app.site("KIR", KIRITIMATI);
    app.site("PPG", PAGO_PAGO);
    let inv = app.token(Role::Investigator, &["KIR", "PPG"]).await;

    // Kiritimati: day 1 at 00:30 local, the previous day in UTC; today is day 18, the
    // last day of the end-of-treatment window (day 15, window [12, 3]).
    let kir = zone(KIRITIMATI);
    let day1 = days_before(today(kir), 17);
    let code = enrol(&app, &inv, "KIR", kir).await;
    inject(&app, &inv, &code, 1, &at(kir, day1, 0, 30)).await;
    let s = schedule(&app, &inv, &code).await;
    assert_eq!(s["anchor"], "first_dose");
    assert_eq!(s["time_zone"], KIRITIMATI);
    assert_eq!(s["day1"], ymd(day1));
    assert_eq!(s["today"], ymd(today(kir)));
    let ids: Vec<&str> = s["visits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["V1", "V3", "EOT", "FU"],
        "unscheduled visits are not listed"
    );
    let v1 = visit(&s, "V1");
    assert_eq!(
        window(v1),
        (ymd(days_before(day1, 2)), ymd(day1), ymd(day1))
    );
    assert_eq!(v1["status"], "partly_done");
    assert_eq!(v1["recorded"], json!(["injection"]));
    assert_eq!(
        v1["forms"],
        json!(["injection", "echocardiography", "disease_activity"])
    );
    let eot = visit(&s, "EOT");
    assert_eq!(
        window(eot),
        (
            ymd(days_after(day1, 2)),
            ymd(days_after(day1, 14)),
            ymd(today(kir))
        )
    );
    assert_eq!(eot["status"], "due", "the window's last day is inside it");
    // day 3 passed with nothing and the end-of-treatment target day has come
    assert_eq!(visit(&s, "V3")["status"], "missed");
    assert_eq!(visit(&s, "FU")["status"], "not_yet_due");

    // Pago Pago: day 1 at 23:30 local, the next day in UTC; today is day 36, the first day
    // of the follow-up window (day 43, window [7, 7]).
    let ppg = zone(PAGO_PAGO);
    let day1 = days_before(today(ppg), 35);
    let code = enrol(&app, &inv, "PPG", ppg).await;
    inject(&app, &inv, &code, 1, &at(ppg, day1, 23, 30)).await;
    let s = schedule(&app, &inv, &code).await;
    assert_eq!(s["day1"], ymd(day1));
    let fu = visit(&s, "FU");
    assert_eq!(fu["window_opens"], ymd(today(ppg)));
    assert_eq!(fu["status"], "due", "the window's first day is inside it");
    // the end-of-treatment window closed on day 18 with nothing entered, and the next
    // visit's target day (43) has not come: overdue, still to be chased
    let eot = visit(&s, "EOT");
    assert_eq!(eot["window_closes"], ymd(days_after(day1, 17)));
    assert_eq!(eot["status"], "overdue");
    assert_eq!(visit(&s, "V3")["status"], "missed");
    assert_eq!(
        app.count("SELECT count(*) AS n FROM form_records WHERE form_id <> 'injection'"),
        0
    );
}

#[actix_web::test]
async fn visits_are_done_when_every_expected_form_has_a_live_record() {
    let app = TestApp::spawn().await;
    app.site("KIR", KIRITIMATI);
    let inv = app.token(Role::Investigator, &["KIR"]).await;
    let kir = zone(KIRITIMATI);
    let day1 = days_before(today(kir), 2);
    let code = enrol(&app, &inv, "KIR", kir).await;

    // no first dose yet: no day 1, no dates, nothing due
    let s = schedule(&app, &inv, &code).await;
    assert_eq!(s["day1"], Value::Null);
    for v in s["visits"].as_array().unwrap() {
        assert_eq!(v["status"], "not_yet_due", "{v}");
        assert_eq!(window(v), ("none".into(), "none".into(), "none".into()));
    }

    inject(&app, &inv, &code, 1, &at(kir, day1, 9, 0)).await;
    let post = |form: &'static str, body: Value| {
        let app = &app;
        let inv = &inv;
        let code = &code;
        async move {
            let r = app
                .post(&format!("/api/v1/subjects/{code}/forms/{form}"), inv, &body)
                .await;
            assert_eq!(r.status, 201, "{}", r.text);
            r.body["id"].as_i64().unwrap()
        }
    };
    let activity = |visit: &str, on: NaiveDate| {
        json!({"visit": visit, "values": {"assessed_on": ymd(on), "crp_mg_l": "120.5", "wbc": "14.2",
                "conjunctivitis": true, "oral_changes": true, "rash": false,
                "extremity_changes": false, "lymphadenopathy": false}})
    };
    post("disease_activity", activity("V1", day1)).await;
    let echo = post(
        "echocardiography",
        json!({"visit": "V1", "values": {"performed_on": ymd(day1), "lmca_z": "1.00", "lad_z": "1.00",
               "rca_z": "1.00", "dilatation": false, "aneurysm": false}}),
    )
    .await;
    let s = schedule(&app, &inv, &code).await;
    let v1 = visit(&s, "V1");
    assert_eq!(v1["status"], "done");
    assert_eq!(
        v1["recorded"],
        json!(["injection", "echocardiography", "disease_activity"])
    );
    // today is day 3: due until something is entered
    assert_eq!(visit(&s, "V3")["status"], "due");

    post("disease_activity", activity("V3", today(kir))).await;
    let s = schedule(&app, &inv, &code).await;
    assert_eq!(visit(&s, "V3")["status"], "partly_done");
    assert_eq!(visit(&s, "V3")["recorded"], json!(["disease_activity"]));
    // the day-3 injection counts for the visit on day 3
    let now = Utc::now().to_rfc3339();
    inject(&app, &inv, &code, 3, &now).await;
    let s = schedule(&app, &inv, &code).await;
    assert_eq!(visit(&s, "V3")["status"], "done");

    // a record entered in error no longer counts
    let r = app
        .request(
            reqwest::Method::DELETE,
            &format!("/api/v1/subjects/{code}/forms/echocardiography/{echo}"),
            Some(&inv),
            Some(&json!({"reason": "wrong patient"})),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let s = schedule(&app, &inv, &code).await;
    assert_eq!(visit(&s, "V1")["status"], "partly_done");
    assert_eq!(
        visit(&s, "V1")["recorded"],
        json!(["injection", "disease_activity"])
    );
}

#[actix_web::test]
async fn day_one_is_enrolment_and_a_log_counts_inside_the_window() {
    let path = format!("{}/config/studies/mkd.toml", env!("CARGO_MANIFEST_DIR"));
    let app = TestApp::spawn_with(&[("CASEBOOK_STUDY", &path)]).await;
    app.site("KIR", KIRITIMATI);
    let inv = app.token(Role::Investigator, &["KIR"]).await;
    let kir = zone(KIRITIMATI);
    let code = enrol(&app, &inv, "KIR", kir).await;
    let s = schedule(&app, &inv, &code).await;
    assert_eq!(s["anchor"], "enrolment");
    assert_eq!(s["day1"], ymd(today(kir)));
    let first = &s["visits"][0];
    assert_eq!(first["day"], 1);
    assert_eq!(first["status"], "due");
    assert_eq!(s["visits"][1]["status"], "not_yet_due");

    // M0 expects the labs (entered for the visit) and the crisis log (entered without a
    // visit: it counts when dated inside the visit's window)
    let on = ymd(today(kir));
    let r = app
        .post(
            &format!("/api/v1/subjects/{code}/forms/labs"),
            &inv,
            &json!({"visit": "M0", "values": {"sampled_on": on, "crp_mg_l": "12.5"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let s = schedule(&app, &inv, &code).await;
    assert_eq!(s["visits"][0]["status"], "partly_done");
    let r = app
        .post(
            &format!("/api/v1/subjects/{code}/forms/crisis"),
            &inv,
            &json!({"values": {"start_date": on, "fever_days": 1, "max_celsius": "39.5",
                    "abdominal_pain": 1, "arthralgia": 0, "rash": 0, "lymphadenopathy": 0,
                    "aphthous_ulcers": 0}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let s = schedule(&app, &inv, &code).await;
    assert_eq!(s["visits"][0]["status"], "done");
    assert_eq!(s["visits"][0]["recorded"], json!(["labs", "crisis"]));
    // a crisis outside a visit's window does not count for it
    assert_eq!(s["visits"][1]["recorded"], json!([]));
}

#[actix_web::test]
async fn a_subject_outside_the_callers_sites_has_no_schedule() {
    let app = TestApp::spawn().await;
    app.site("KIR", KIRITIMATI);
    app.site("FRB", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["KIR"]).await;
    let code = enrol(&app, &inv, "KIR", zone(KIRITIMATI)).await;
    for role in [Role::Investigator, Role::Monitor] {
        let other = app.token(role, &["FRB"]).await;
        let r = app
            .get(&format!("/api/v1/subjects/{code}/schedule"), &other)
            .await;
        r.assert_problem(404, None);
    }
    let r = app.get("/api/v1/subjects/KIR-999/schedule", &inv).await;
    r.assert_problem(404, None);
}

#[actix_web::test]
async fn day_one_is_the_earliest_live_anchor_item_of_a_form_of_the_engine() {
    // NLRP12: anchor_item = "treatment.started_on"; V1 on day 1 with window [0, 7]
    let path = format!("{}/config/studies/nlrp12.toml", env!("CARGO_MANIFEST_DIR"));
    let app = TestApp::spawn_with(&[("CASEBOOK_STUDY", &path)]).await;
    app.site("KIR", KIRITIMATI);
    let inv = app.token(Role::Investigator, &["KIR"]).await;
    let kir = zone(KIRITIMATI);
    let code = enrol(&app, &inv, "KIR", kir).await;
    let s = schedule(&app, &inv, &code).await;
    assert_eq!(s["day1"], Value::Null);
    let mut ids = Vec::new();
    for ago in [3, 7] {
        let on = ymd(days_before(today(kir), ago));
        let r = app
            .post(
                &format!("/api/v1/subjects/{code}/forms/treatment"),
                &inv,
                &json!({"values": {"started_on": on, "daily_dose_mg": "100.0"}}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        ids.push(r.body["id"].as_i64().unwrap());
    }
    // the earlier start, 7 days ago: V1's window (days 1 to 8) closes today
    let s = schedule(&app, &inv, &code).await;
    assert_eq!(s["day1"], ymd(days_before(today(kir), 7)));
    assert_eq!(s["visits"][0]["window_closes"], ymd(today(kir)));
    assert_eq!(s["visits"][0]["status"], "due");
    // entered in error, it no longer anchors: day 1 is the other start
    let r = app
        .request(
            reqwest::Method::DELETE,
            &format!("/api/v1/subjects/{code}/forms/treatment/{}", ids[1]),
            Some(&inv),
            Some(&json!({"reason": "wrong subject"})),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let s = schedule(&app, &inv, &code).await;
    assert_eq!(s["day1"], ymd(days_before(today(kir), 3)));
}
