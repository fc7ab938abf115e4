"""Deferral: pick the threshold on the deferral score with clinicians and see, as it moves,
what it does to every skin-tone group and clinic, in plain numbers per 100 referrals; set it
side by side with another operating point or another split; compare each stored policy's
promise with what it achieved; save a threshold as a named policy.

Everything the threshold changes is one fragment (``live``): a slider move reruns it alone,
not the page's header, its fixed tables and its forms."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import streamlit as st  # noqa: E402

from dashboard import charts, deferral_tables as dt, queries, tables, ui, words  # noqa: E402
from trainer.uncertainty.operating_points import policy_rows  # noqa: E402

page = ui.header("Deferral")
path, version, run, model, split = page.path, page.version, page.run, page.model, page.split
urgent = queries.urgent_classes(path, version, run["dataset"])
points = queries.operating_points(path, version, run.run_id, model, split, urgent)
policies = queries.model_policies(path, version, run.run_id, model)
thresholds, per_group = dt.policy_thresholds(policies), dt.group_thresholds(policies)
saved = dt.saved_policies(policies)
KEEP, SLIDER, PICK = "(keep the slider)", "deferral.threshold", "deferral.policy"
ui.point_from_link()


def current() -> tuple[str | None, float, dict[str, float]]:
    """The operating point the page shows (a stored policy, or the slider's threshold)."""
    return dt.resolve(ui.carried("point"), thresholds, per_group, queries.default_policy(run))


def use_policy():
    name = st.session_state[PICK]
    ui.carry(point={"policy": name} if name != KEEP else {"threshold": st.session_state[SLIDER]})


def moved():
    """A slider move leaves the stored policy: its name and its thresholds no longer apply."""
    ui.carry(point={"threshold": st.session_state[SLIDER]})


def controls() -> tuple[str | None, float, dict[str, float]]:
    """The policy box and the slider, both showing the operating point the numbers use."""
    policy, threshold, groups = current()
    st.session_state[SLIDER] = min(max(round(threshold, 3), 0.0), 1.0)
    st.session_state[PICK] = policy or KEEP
    st.selectbox("Start from a stored policy ('saved' ones were saved here)",
                 [KEEP] + sorted(thresholds), key=PICK, on_change=use_policy,
                 format_func=lambda p: f"{p} (saved)" if p in saved else p)
    st.slider("Defer to a clinician when the deferral score is at least", 0.0, 1.0, step=0.005, key=SLIDER,
              format="%.3f", on_change=moved)
    st.query_params["threshold"] = f"{threshold:.3f}"  # a shared link reopens this point
    if policy:
        st.query_params["policy"] = policy
    elif "policy" in st.query_params:
        del st.query_params["policy"]
    ui.carry(point={"policy": policy, "threshold": threshold})  # for the other pages
    if groups:
        st.info(f"Policy {ui.plain(policy)} defers each skin-tone group at its own threshold: "
                + ", ".join(f"{g} {t:.3f}" for g, t in sorted(groups.items())) + f" (others {threshold:.3f}). "
                "Moving the slider returns to one threshold for all.")
    elif not 0 <= threshold <= 1:
        st.info(("Policy " + ui.plain(policy) if policy else "The link") + f" sets the threshold at {threshold:.3f}, "
                "beyond the slider (0 to 1): " + ("no case" if threshold > 1 else "every case") + " is deferred.")
    return policy, threshold, groups


def numbers(view) -> None:
    """The headline figures, the plain words per 100 referrals, clinician hours, and each
    skin-tone group and clinic at this operating point."""
    overall, by_family = dt.operating_point(view)
    c = st.columns(5)
    for i, (label, column) in enumerate((("Reviewed", "defer_rate"), ("Kept", "coverage"),
                                          ("Right when kept", "accepted_accuracy"),
                                          ("Urgent missed", "missed_urgent_rate"))):
        c[i].metric(label, words.number(overall[column], column), help=words.GLOSSARY[label.lower()])
    c[4].metric("Clinician reviews", f"{overall.deferred:,}", help=f"cases deferred to a clinician, of {overall.n:,}")
    st.subheader("In plain numbers")
    hundred = dt.per_hundred(view[view.slice.isin(["overall", "fitzpatrick_group"])])
    st.markdown(dt.plain_words(hundred.iloc[0]))
    ui.table(hundred, {c: "n0" for c in hundred.columns[1:]})
    left, right = st.columns(2)
    per_day = left.number_input("Referrals a day", min_value=0, value=100, step=10, key="deferral.per_day")
    minutes = right.number_input("Minutes a clinician spends on a review", min_value=0.0, value=5.0, step=1.0,
                                 key="deferral.minutes")
    hours = dt.clinician_hours(float(overall.defer_rate), int(per_day), float(minutes))
    st.markdown(f"At {per_day:,} referrals a day this is **{hours:.1f} clinician hours a day**.")
    for family, title in (("fitzpatrick_group", "By skin-tone group"), ("clinic", "By clinic")):
        st.markdown(f"**{title}**")  # full width: every column shows whole
        ui.table(dt.readable(by_family[family]), dt.READABLE_PERCENT)


def side_by_side(view, threshold: float, groups: dict[str, float]) -> None:
    st.subheader("Side by side")
    mode = st.radio("Compare this operating point with", dt.COMPARE, horizontal=True, key="deferral.compare")
    if mode == dt.COMPARE[0]:
        other = st.selectbox("The other operating point", [dt.BY_HAND, *sorted(thresholds)], key="deferral.other")
        if other == dt.BY_HAND:
            other_t = st.number_input("Its threshold", 0.0, 1.0, value=min(round(threshold, 3) + 0.05, 1.0) if
                                      threshold <= 1 else 0.5, step=0.005, format="%.3f", key="deferral.other_t")
            other_view, labels = points.at(other_t), ("now", f"at {other_t:.3f}")
        else:  # "policy: NAME" never collides with the table's own columns, whatever the name
            other_view, labels = points.at(thresholds[other], per_group.get(other, {})), ("now", f"policy: {other}")
    else:
        others = sorted((s for s in ui.SPLITS if s != split), key=lambda s: s != "calib")
        other_split = st.selectbox("The other split", others, key="deferral.other_split",
                                   format_func=lambda s: words.SPLIT_NAMES[s])
        other_view = queries.operating_points(path, version, run.run_id, model, other_split, urgent).at(threshold,
                                                                                                        groups)
        labels = (split, other_split)
    compared = dt.side_by_side(view, other_view, labels)
    st.markdown(ui.plain(dt.compare_words(compared, labels)))
    ui.table(compared, dt.side_by_side_formats(compared))
    st.caption("Change: the second minus the first, in percentage points. " + words.glossary(["splits"])[2:])
    ui.download_buttons(compared, f"{run.run_id}_{model}_{split}_side_by_side", "deferral.download",
                        page.about(model=model, split=f"{labels[0]} vs {labels[1]}", threshold=round(threshold, 6)))


@st.fragment
def live() -> None:
    """Everything a threshold move changes."""
    _, threshold, groups = controls()
    view = points.at(threshold, groups)
    numbers(view)
    side_by_side(view, threshold, groups)
    curves = queries.run_table(path, version, run.run_id, "risk_coverage", model=model, split=split,
                               slice=("overall", "fitzpatrick_group"))
    coverage = float(view[view.slice == "overall"]["coverage"].iloc[0])
    st.altair_chart(charts.risk_coverage(curves, coverage, "Risk-coverage by skin-tone group (the line: this "
                                         "threshold)"), width="stretch")


live()

st.subheader(f"The stored policies on {split}: promise against result")
achieved = queries.run_table(path, version, run.run_id, "policies", model=model, split=split,
                             slice=("overall", "fitzpatrick_group"))
ui.table(dt.policy_promises(achieved), dt.READABLE_PERCENT)

st.subheader("Prediction sets by skin-tone group")
conf = queries.run_table(path, version, run.run_id, "conformal", model=model, split=split)
coverage = tables.conformal_coverage(conf)
ui.table(coverage, {c: "pct" for c in coverage.columns[2:]})
st.caption("Share of cases whose set holds the true category, against the target 1 - alpha (90%). "
           + words.GLOSSARY["prediction set"])

with st.form("deferral.save"):
    name = st.text_input("Save this threshold as a policy named", key="deferral.name")
    if st.form_submit_button("Save policy"):
        shown, threshold, groups = current()
        if not name.strip():
            st.error("Give the policy a name first.")
        elif groups:
            st.error(f"{shown} is stored already, with one threshold per skin-tone group; a saved policy has one "
                     "threshold for all. Move the slider to the threshold to save.")
        else:
            base = thresholds.get(queries.default_policy(run), 1.0)
            by_split = {sp: queries.operating_points(path, version, run.run_id, model, sp, urgent) for sp in ui.SPLITS}
            rows = policy_rows(by_split, threshold, base, {"threshold": threshold, "saved_from": "dashboard"})
            try:
                queries.save_policy(path, run.run_id, model, name.strip(), rows)
                st.toast(f"Saved policy {ui.plain(repr(name.strip()))} at {threshold:.3f} for {model}.")
                st.rerun()  # every list of policies on the page shows it
            except (ValueError, queries.StoreError) as exc:
                st.error(str(exc))
if saved:
    with st.form("deferral.delete"):
        gone = st.selectbox("Delete a saved policy", saved, key="deferral.delete_name")
        if st.form_submit_button("Delete"):
            try:
                queries.delete_policy(path, run.run_id, model, gone)
                st.toast(f"Deleted {ui.plain(repr(gone))}.")
                ui.carry(point={"threshold": current()[1]})  # the threshold on screen stays
                st.rerun()
            except (ValueError, queries.StoreError) as exc:
                st.error(str(exc))
ui.glossary("deferral score", "threshold", "reviewed", "kept", "right when kept", "urgent missed", "policy",
            "promise held", "prediction set", "risk-coverage", "splits")
