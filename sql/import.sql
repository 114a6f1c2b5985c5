--
-- IMPORT FOREIGN SCHEMA: the seed's tables, keys in the "C" collation
--
CREATE SERVER iq_imp FOREIGN DATA WRAPPER iq_fdw;

CREATE SCHEMA imp_all;
IMPORT FOREIGN SCHEMA stores FROM SERVER iq_imp INTO imp_all;
\det+ imp_all.*
\d imp_all.customer
\d imp_all.order_count

CREATE SCHEMA imp_limit;
IMPORT FOREIGN SCHEMA stores LIMIT TO (order_count, no_such_table) FROM SERVER iq_imp INTO imp_limit;
\det imp_limit.*

CREATE SCHEMA imp_except;
IMPORT FOREIGN SCHEMA stores EXCEPT (order_count) FROM SERVER iq_imp INTO imp_except;
\det imp_except.*

-- a second import into the same schema collides, as CREATE does
IMPORT FOREIGN SCHEMA stores FROM SERVER iq_imp INTO imp_all;

-- a server name that needs quoting
CREATE SERVER "IQ Server" FOREIGN DATA WRAPPER iq_fdw;
CREATE SCHEMA imp_quoted;
IMPORT FOREIGN SCHEMA stores LIMIT TO (customer) FROM SERVER "IQ Server" INTO imp_quoted;
\det imp_quoted.*

DROP SCHEMA imp_all, imp_limit, imp_except, imp_quoted CASCADE;
DROP SERVER iq_imp, "IQ Server";
