"""The store's tables and the `votes` view (DuckDB DDL), run on every open: tables are created when missing and
columns added since version 1 are added in place, so an older database file keeps working.

Pairs record how they were chosen (`chosen_by`: random | uncertain | repeat | import | demo; `predicted_p_left`:
the reward model's P(left preferred) when it chose the pair), for an unannounced self-consistency repeat, the
pair it repeats with sides swapped (`repeat_of`), and the round of collection it was shown in (`round`: the name the
arena served when it showed the pair, core/train/rounds.py; NULL outside any round and for imported pairs).
"""
from core.records import CHOICES, Generation, SamplingSettings

SCHEMA_VERSION = 1

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
INSERT OR IGNORE INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}');
CREATE TABLE IF NOT EXISTS prompts (
    prompt_id VARCHAR PRIMARY KEY, text VARCHAR NOT NULL, source VARCHAR NOT NULL,
    library_id VARCHAR, category VARCHAR, split VARCHAR, created_at TIMESTAMP NOT NULL);
CREATE TABLE IF NOT EXISTS generations (
    generation_id VARCHAR PRIMARY KEY, prompt_id VARCHAR NOT NULL, text VARCHAR NOT NULL,
    policy VARCHAR NOT NULL, base_model VARCHAR, adapter VARCHAR, system_prompt VARCHAR,
    temperature DOUBLE, top_p DOUBLE, top_k INTEGER, max_new_tokens INTEGER, seed BIGINT,
    num_tokens INTEGER, finished BOOLEAN, latency_ms DOUBLE, well_formed BOOLEAN, n_items INTEGER,
    created_at TIMESTAMP NOT NULL);
CREATE TABLE IF NOT EXISTS pairs (
    pair_id VARCHAR PRIMARY KEY, prompt_id VARCHAR NOT NULL,
    left_generation_id VARCHAR NOT NULL, right_generation_id VARCHAR NOT NULL,
    source VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL);
ALTER TABLE pairs ADD COLUMN IF NOT EXISTS chosen_by VARCHAR;
ALTER TABLE pairs ADD COLUMN IF NOT EXISTS predicted_p_left DOUBLE;
ALTER TABLE pairs ADD COLUMN IF NOT EXISTS repeat_of VARCHAR;
ALTER TABLE pairs ADD COLUMN IF NOT EXISTS round VARCHAR;
CREATE TABLE IF NOT EXISTS comparisons (
    comparison_id VARCHAR PRIMARY KEY, pair_id VARCHAR NOT NULL,
    choice VARCHAR NOT NULL CHECK (choice IN {CHOICES}), strength INTEGER CHECK (strength BETWEEN 1 AND 3),
    annotator VARCHAR NOT NULL, decision_ms INTEGER, created_at TIMESTAMP NOT NULL);
CREATE TABLE IF NOT EXISTS retractions (
    comparison_id VARCHAR PRIMARY KEY, annotator VARCHAR, created_at TIMESTAMP NOT NULL);
CREATE TABLE IF NOT EXISTS ratings (
    rating_id VARCHAR PRIMARY KEY, generation_id VARCHAR NOT NULL, stars INTEGER NOT NULL CHECK (stars BETWEEN 1 AND 5),
    annotator VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL);
CREATE TABLE IF NOT EXISTS demonstrations (
    demonstration_id VARCHAR PRIMARY KEY, prompt_id VARCHAR NOT NULL, text VARCHAR NOT NULL,
    edited_from_generation_id VARCHAR, annotator VARCHAR NOT NULL, source VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL);
CREATE TABLE IF NOT EXISTS reviews (
    review_id VARCHAR PRIMARY KEY, comparison_id VARCHAR NOT NULL,
    action VARCHAR NOT NULL CHECK (action IN ('confirm', 'noise', 'relabel')), choice VARCHAR,
    new_comparison_id VARCHAR, annotator VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL);
CREATE OR REPLACE VIEW votes AS
    SELECT c.comparison_id, c.pair_id, pr.prompt_id, pr.text AS prompt, pr.split,
           c.choice, c.strength, c.annotator, c.decision_ms, c.created_at, p.source,
           p.chosen_by, p.predicted_p_left, p.repeat_of, p.round,
           l.generation_id AS left_generation_id, l.text AS left_text, l.policy AS left_policy,
           r.generation_id AS right_generation_id, r.text AS right_text, r.policy AS right_policy,
           x.comparison_id IS NOT NULL AS retracted, v.review
    FROM comparisons c JOIN pairs p USING (pair_id) JOIN prompts pr ON pr.prompt_id = p.prompt_id
    JOIN generations l ON l.generation_id = p.left_generation_id
    JOIN generations r ON r.generation_id = p.right_generation_id
    LEFT JOIN retractions x ON x.comparison_id = c.comparison_id
    LEFT JOIN (SELECT comparison_id, arg_max(action, created_at) AS review FROM reviews
               WHERE action IN ('confirm', 'noise') GROUP BY comparison_id) v ON v.comparison_id = c.comparison_id;
"""


# The generations table's columns in order, and a Generation as a row of them (every writer spells them so).
GENERATION_COLUMNS = ("generation_id, prompt_id, text, policy, base_model, adapter, system_prompt, temperature, top_p, "
                      "top_k, max_new_tokens, seed, num_tokens, finished, latency_ms, well_formed, n_items, created_at")


def generation_row(gen: Generation) -> list:
    s = gen.sampling or SamplingSettings(None, None, None, None)
    return [gen.generation_id, gen.prompt.prompt_id, gen.text, gen.policy.name, gen.policy.base_model,
            gen.policy.adapter, gen.system_prompt, s.temperature, s.top_p, s.top_k, s.max_new_tokens, gen.seed,
            gen.num_tokens, gen.finished, gen.latency_ms, gen.well_formed, gen.n_items, gen.created_at]
