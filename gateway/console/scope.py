"""What the current console user may see (pages, keys, requests) and the audit of what they
change; shared by the pages."""
from __future__ import annotations

from dataclasses import dataclass

from flask import current_app, request
from flask_login import current_user

from gateway.auth.rbac import sees_everything
from gateway.auth.security import client_ip
from gateway.htmx import navigate
from gateway.services.accounting import key_scope
from gateway.services.admin import audit, settings
from gateway.services.reporting import filters


def log_action(action: str, target: str = "", **details) -> None:
    """Audit a console change by the current user."""
    audit.record(current_user, action, target, details, ip=client_ip())


def done(action: str, target: str, url: str, **details):
    """After a change: audit it, then go to `url`."""
    log_action(action, target, **details)
    return navigate(url)


def owner() -> key_scope.Owner | None:
    """Whose keys and requests the current user sees: a member their own and their team's;
    None for admins and viewers, who see everything."""
    return None if sees_everything() else key_scope.Owner(current_user.id, current_user.team_id)


def usage_filter(args=None) -> tuple[filters.UsageFilter, dict]:
    """The filter from the query string, narrowed to what the current user may see."""
    return filters.parse_filter(args if args is not None else request.args, owner())


def base_url() -> str:
    """This gateway's public URL for snippets: the setting, else the URL the browser used."""
    return (settings.get("public_base_url") or request.host_url).rstrip("/")


@dataclass(frozen=True, slots=True)
class NavLink:
    endpoint: str
    label: str
    active: tuple[str, ...]     # the pages (endpoint names) under this link
    group: str = ""             # a menu of the top bar ("Configure", "Admin"); "" for a link of its own


NAV = (
    NavLink("console.marketplace", "Models", ("marketplace", "model_detail")),
    NavLink("console.keys_index", "Keys", ("keys_index", "key_new", "key_detail", "key_edit", "key_create",
                                            "key_update")),
    NavLink("console.usage", "Usage", ("usage",)),
    NavLink("console.logs", "Logs", ("logs",)),
    NavLink("console.simulator_page", "Simulator", ("simulator_page", "simulator_run")),
    NavLink("console.playground", "Playground", ("playground",)),
    NavLink("console.alerts_index", "Alerts", ("alerts_index",)),
    NavLink("console.providers_index", "Providers", ("providers_index", "provider_new", "provider_edit",
                                                     "provider_create", "provider_update"), "Configure"),
    NavLink("console.routing_deployments", "Routing", (
        "routing_deployments", "routing_deployment_new", "routing_deployment_create", "routing_deployment_edit",
        "routing_deployment_update", "routing_aliases", "routing_alias_set", "routing_alias_history",
        "routing_alias_rollback", "routing_policies", "routing_policy_new", "routing_policy_create",
        "routing_policy_edit", "routing_policy_update", "routing_policy_delete"), "Configure"),
    NavLink("console.teams_index", "Teams", ("teams_index", "team_new", "team_create", "team_detail", "team_edit",
                                              "team_update", "team_member_add", "plans_index", "plan_new",
                                              "plan_create", "plan_edit", "plan_update", "tag_budgets_index",
                                              "tag_budget_new", "tag_budget_create", "tag_budget_edit",
                                              "tag_budget_update"), "Configure"),
    NavLink("console.users_index", "Users", ("users_index", "user_create"), "Admin"),
    NavLink("console.audit_index", "Audit", ("audit_index",), "Admin"),
    NavLink("console.settings_page", "Settings", ("settings_page",), "Admin"),
)


def nav_links() -> list[NavLink]:
    """The links the current user may follow: a link's roles are those its page's view requires."""
    views = current_app.view_functions
    return [link for link in NAV if current_user.role in views[link.endpoint].required_roles]


@dataclass(frozen=True, slots=True)
class NavMenu:
    label: str
    links: tuple[NavLink, ...]

    def holds(self, page: str) -> bool:
        """Whether `page` (an endpoint name) is under one of the menu's links."""
        return any(page in link.active for link in self.links)


def nav_entries() -> list[NavLink | NavMenu]:
    """The top bar: the user's links in NAV order, a group's links gathered into one menu where the
    group's first link was; a group the user sees one link of stays a plain link."""
    links = nav_links()
    entries: list[NavLink | NavMenu] = []
    for link in links:
        if not link.group:
            entries.append(link)
            continue
        members = tuple(m for m in links if m.group == link.group)
        if len(members) == 1:
            entries.append(link)
        elif link is members[0]:
            entries.append(NavMenu(link.group, members))
    return entries
