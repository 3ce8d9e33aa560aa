ALTER INDEX blogs_search RESET (fastupdate);
ALTER INDEX blogs_title_trgm RESET (fastupdate);
