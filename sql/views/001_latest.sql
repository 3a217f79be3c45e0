-- Convenience views for SQL consumers: the newest night per dataset, and the users at risk.

CREATE OR REPLACE VIEW latest_recommendations AS
SELECT r.*
FROM recommendations AS r
JOIN (SELECT dataset, MAX(run_date) AS run_date FROM recommendations GROUP BY dataset) AS m
  ON r.dataset = m.dataset AND r.run_date = m.run_date;

CREATE OR REPLACE VIEW latest_churn_risk AS
SELECT c.*
FROM churn_risk AS c
JOIN (SELECT dataset, MAX(run_date) AS run_date FROM churn_risk GROUP BY dataset) AS m
  ON c.dataset = m.dataset AND c.run_date = m.run_date;

CREATE OR REPLACE VIEW at_risk_users AS
SELECT *
FROM latest_churn_risk
WHERE risk_bucket = 'high';
