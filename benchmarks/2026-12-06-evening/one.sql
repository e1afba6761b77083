INSERT INTO r.one (v) VALUES (1);
