INSERT INTO users (id, name, email)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[])
ON CONFLICT (id) DO NOTHING
