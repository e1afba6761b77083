-- The panel package a plan gets on servers of each driver (DirectAdmin, cPanel and Plesk
-- name their packages differently); a plan without an entry uses its field2, else its slug.
CREATE TABLE plan_packages (
    plan_id TEXT NOT NULL REFERENCES plans (id),
    driver  TEXT NOT NULL,
    package TEXT NOT NULL,
    PRIMARY KEY (plan_id, driver)
);
