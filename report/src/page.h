// Internal to report/: the page shell and the pieces both pages share.
#pragma once

#include <string>
#include <vector>

namespace geopipe::report::page {

// A whole HTML document: title, the shared style sheet, the body. No script, no external
// resource: it renders the same offline.
std::string document(const std::string& title, const std::string& body);
// A <section> with an id and a heading.
std::string section(const std::string& id, const std::string& heading, const std::string& content);
// A table: header row and body rows (every cell escaped).
std::string table(const std::string& cls, const std::vector<std::string>& header,
                  const std::vector<std::vector<std::string>>& rows);
// A two-column table of (name, value) rows, names as row headers.
std::string key_values(const std::string& cls, const std::vector<std::vector<std::string>>& rows);
// One colour per series index (Tableau 10).
const char* palette(size_t index);

}  // namespace geopipe::report::page
