// P8 (scripts/umami/README.md): upstream's Favicon loads each tracked website's icon from
// DuckDuckGo's icon service (ip3/<domain>.ico), telling a third party which sites this
// Umami tracks, from every dashboard view. Self-hosted analytics sends nothing to third
// parties: no icon is shown (the edge's CSP would block the request anyway, with a console
// error in every browser). Same export and props as upstream.
export function Favicon({ domain }: { domain?: string; [prop: string]: unknown }) {
  void domain;
  return null;
}

export default Favicon;
